"""The runnable scripts in examples/ run as written (with --quick: small real subsets)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


def _example(name: str, tmp_path: Path, data_dir: Path, *extra: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / "examples" / name), "--quick", "--data",
                        str(data_dir), "--out", str(tmp_path / "out"), *extra],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_own_model_example(tmp_path: Path, data_dir: Path) -> None:
    out = _example("own_model.py", tmp_path, data_dir)
    assert "cut point layer2.0" in out and "device executor on 300 images" in out
    acc = float(out.split("device executor on 300 images: accuracy ")[1].split(",")[0])
    assert acc > 0.7
    assert (tmp_path / "out" / "manifest.json").is_file()
