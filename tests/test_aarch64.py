"""Opt-in: edge-ee-run on an arm64 Debian root under qemu-aarch64 (cortex-a72) decides
exactly like the x86 run.

Opt-in: the `aarch64` marker is deselected by default (pyproject addopts); run it with
`python -m pytest -m aarch64` (needs root, apt and PyPI; minutes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.aarch64


@pytest.mark.shared_data
def test_runner_on_aarch64_matches_x86(tmp_path: Path, fashion, fashion_fitted) -> None:
    from edge_ee.pipeline import export
    net, fitted = fashion_fitted
    bundle = export(net, fitted.heads, tmp_path / "bundle", fashion[1], "fashion-aarch64", None,
                    formats=("onnx", "tflite"), int8=True, calibration_data=fashion[0],
                    calibration_samples=128)
    inp = tmp_path / "samples.npz"
    np.savez(inp, x=fashion[1].images[:100], y=fashion[1].labels[:100])
    r = subprocess.run(["bash", str(ROOT / "scripts/aarch64_check.sh"), str(bundle), str(inp)],
                       capture_output=True, text=True, timeout=3600,
                       env={**os.environ, "PYTHON": sys.executable})
    print(r.stdout[-4000:], r.stderr[-4000:])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "MISMATCH" not in r.stdout and r.stdout.count(" OK") >= 2


@pytest.mark.shared_data
def test_vendored_pyz_on_aarch64_matches_x86(tmp_path: Path, fashion_bundle: Path,
                                             fashion_samples: Path) -> None:
    """`edge-ee pack-runner --platform linux_aarch64` run by the arm64 root's bare python3
    (nothing pip-installed) decides exactly like the installed x86 runner."""
    r = subprocess.run(["bash", str(ROOT / "scripts/aarch64_check.sh"), str(fashion_bundle),
                        str(fashion_samples)], capture_output=True, text=True, timeout=3600,
                       env={**os.environ, "PYTHON": sys.executable, "EDGE_EE_AARCH64_PYZ": "1"})
    print(r.stdout[-4000:], r.stderr[-4000:])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "pyz " in r.stdout and " OK" in r.stdout and "MISMATCH" not in r.stdout
    assert "/shiv/edge-ee-run-aarch64.pyz_" in r.stdout and "aarch64" in r.stdout
