"""Run the installed CLIs (`edge-ee`, `edge-ee-run`) as real subprocesses in tests.

Uses the console script next to this interpreter when it exists, else `python -m` on the
module behind it (an environment without the entry points installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
MODULES = {"edge-ee": "edge_ee.cli", "edge-ee-run": "device_runners.cli"}


def run_cli(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`name args...` with 2 intra-op threads; output captured as text."""
    exe = BIN / name
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", MODULES[name]]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
