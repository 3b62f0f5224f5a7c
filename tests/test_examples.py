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


def test_segmentation_example(tmp_path: Path, data_dir: Path) -> None:
    out = _example("segmentation_cbt.py", tmp_path, data_dir)
    line = out.strip().splitlines()[-1]
    assert "6 CamVid test images on the device executor: mIoU" in line
    assert float(line.split(", ")[1].split(" of the full")[0]) < 1.0  # tokens really exit


def test_clustering_example(tmp_path: Path, data_dir: Path) -> None:
    out = _example("clustering.py", tmp_path, data_dir)
    assert "device runner on 200 test images: accuracy" in out
    frac = float(out.split("with exits accuracy")[1].split(" at ")[1].split(" of the FLOPs")[0])
    assert frac < 0.9
