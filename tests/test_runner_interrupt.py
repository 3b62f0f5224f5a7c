"""Ctrl-C during a run keeps the samples done so far, marked incomplete (exit code 130)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.shared_data


@pytest.mark.slow
def test_sigint_keeps_partial_results(tmp_path: Path, fashion_bundle: Path,
                                      fashion_samples: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "device_runners.cli", str(fashion_bundle), "--input",
         str(fashion_samples), "--out", str(out), "--min-duration-s", "120", "--idle-s", "0",
         "--power-source", "null"],
        stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.monotonic() + 60
    while "pass 2" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.read(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    res = json.loads(out.read_text())
    assert res["complete"] is False
    n = len(res["samples"]["exit"])
    assert n >= 200 and len(res["samples"]["prediction"]) == n
    assert "INCOMPLETE" in err
