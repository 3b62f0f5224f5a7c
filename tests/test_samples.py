"""`edge-ee samples` writes the runner's input file from real data: seeded, class-balanced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_ee.errors import ConfigError, DataError
from edge_ee.samples import SamplesConfig, make_samples

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.shared_data


def test_balanced_fashion_subset(tmp_path: Path, data_dir: Path) -> None:
    out = make_samples(SamplesConfig(data=str(data_dir / "fashion-mnist"), out=str(tmp_path / "s.npz"),
                                     count=50, seed=1))
    with np.load(out) as z:
        x, y = z["x"], z["y"]
    assert x.shape == (50, 28, 28, 1) and x.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == [5] * 10  # not the first 50 (all class 0)
    again = make_samples(SamplesConfig(data=str(data_dir / "fashion-mnist"),
                                       out=str(tmp_path / "t.npz"), count=50, seed=1))
    with np.load(again) as z:
        assert (z["x"] == x).all()
    with pytest.raises(ConfigError, match="fewer than the 10 classes"):
        make_samples(SamplesConfig(data=str(data_dir / "fashion-mnist"), out=str(tmp_path / "u.npz"),
                                   count=5))


def test_camvid_split_and_bundle_check(tmp_path: Path, data_dir: Path, fashion_bundle: Path) -> None:
    camvid = data_dir / "camvid-120x160.npz"
    out = make_samples(SamplesConfig(data=str(camvid), out=str(tmp_path / "c.npz"), count=3))
    with np.load(out) as z:
        assert z["x"].shape == (3, 120, 160, 3) and z["y"].shape == (3, 120, 160)
    with pytest.raises(DataError, match="expects uint8"):
        make_samples(SamplesConfig(data=str(camvid), out=str(tmp_path / "d.npz"), count=3,
                                   bundle=str(fashion_bundle)))
    with pytest.raises(DataError, match="not a Fashion-MNIST"):
        make_samples(SamplesConfig(data=str(tmp_path / "nothing.bin"), out=str(tmp_path / "e.npz")))


def test_cli_samples_then_run(tmp_path: Path, data_dir: Path, fashion_bundle: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "edge_ee.cli", "samples", "--data",
                        str(data_dir / "fashion-mnist"), "--count", "20", "--out",
                        str(tmp_path / "s.npz"), "--bundle", str(fashion_bundle)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "20 samples with labels" in r.stdout
    r = subprocess.run([sys.executable, "-m", "device_runners.cli", str(fashion_bundle), "--input",
                        str(tmp_path / "s.npz"), "--out", str(tmp_path / "r.json"), "--quiet",
                        "--idle-s", "0", "--profile", "none", "--power-source", "null"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    bad = subprocess.run([sys.executable, "-m", "edge_ee.cli", "samples", "--data",
                          str(data_dir / "fashion-mnist"), "--count", "0", "--out",
                          str(tmp_path / "x.npz")], capture_output=True, text=True, env=env,
                         timeout=300)
    assert bad.returncode == 2 and "--count must be >= 1" in bad.stderr and "Traceback" not in bad.stderr
