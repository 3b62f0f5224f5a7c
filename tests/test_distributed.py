"""The statistics pass under torchrun (two gloo processes on CPU) equals the single-process
pass within float64 rounding, with an odd number of samples so the shards are uneven."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


def test_two_processes_equal_one(tmp_path: Path, data_dir: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from dist_stats_worker import stats_arrays
    one = stats_arrays(str(data_dir / "fashion-mnist"))
    out = tmp_path / "two.npz"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc-per-node", "2",
                        str(ROOT / "tests" / "dist_stats_worker.py"), str(data_dir / "fashion-mnist"),
                        str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    with np.load(out) as two:
        assert int(two["world"]) == 2
        assert set(two.files) - {"world"} == set(one)
        for k, v in one.items():
            np.testing.assert_allclose(two[k], v, rtol=1e-10, atol=1e-8, err_msg=k)
    assert one["0/counts"].sum() == 701


def test_world_size_mismatch_is_a_typed_error(monkeypatch) -> None:
    from edge_ee import distributed
    from edge_ee.errors import ConfigError
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match="torchrun --nproc-per-node"):
        distributed.init_from_env("cpu", expected_world_size=2)
