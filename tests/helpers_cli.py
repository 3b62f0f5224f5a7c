"""Run the installed CLIs (`edge-ee`, `edge-ee-run`) as real subprocesses in tests.

Uses the console script next to this interpreter when it exists, else `python -m` on the
module behind it (an environment without the entry points installed). The repository root
is put on PYTHONPATH so a `python -m` run and user files (`file.py:factory`) import the
checkout under test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
MODULES = {"edge-ee": "edge_ee.cli", "edge-ee-run": "device_runners.cli"}


def run_cli(name: str, *args: str, timeout: int = 600, cwd: Path | None = None,
            threads: int = 2, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`name args...` with `threads` intra-op threads, the repository on PYTHONPATH and
    `env` added to the environment; output captured as text."""
    exe = BIN / name
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", MODULES[name]]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    full_env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": path, **(env or {})}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=full_env)
