"""House-keeping a maintainer relies on: plain progress lines off a terminal, `--quiet`,
atomic file writes, and no logger of another library changed by an export."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from converters.formats import FORMATS, OPSET, check_formats
from converters.formats.onnx import ONNX_LOGGERS, export_onnx
from device_runners.files import atomic_file, atomic_save_npz, atomic_write_json
from edge_ee.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BAR = ("from converters.progress import progress\nimport time\n"
       "for _ in progress(range(4), desc='steps', interval_s=0.0):\n    time.sleep(0.01)\n")


def _py(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *(("-c", code) if code else ()), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_progress_prints_plain_lines_when_stderr_is_not_a_terminal() -> None:
    r = _py(BAR)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "\x1b" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("steps")]
    assert len(lines) >= 2 and "4/4" in lines[-1]


def test_quiet_hides_progress_and_info() -> None:
    r = _py("from edge_ee.log import configure_logging\nimport logging\n"
            "configure_logging(-1)\nlogging.getLogger('edge_ee.x').info('hello')\n"
            "logging.getLogger('edge_ee.x').warning('careful')\n" + BAR)
    assert r.returncode == 0, r.stderr
    assert "steps" not in r.stderr and "hello" not in r.stderr and "careful" in r.stderr


def test_cli_quiet_and_verbose_flags_bad_input_exits_2(tmp_path: Path) -> None:
    for flag in ("--quiet", "--verbose"):
        r = _py("", "-m", "edge_ee.cli", flag, "report", str(tmp_path / "missing.json"),
                "--bundle", str(tmp_path / "nobundle"), "--out", str(tmp_path / "rep"))
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("edge-ee: error:") and "Traceback" not in r.stderr
    r = _py("", "-m", "edge_ee.cli", "--quiet", "--verbose", "report", "x")
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_onnx_export_leaves_other_loggers_alone(tmp_path: Path) -> None:
    before = {n: logging.getLogger(n).level for n in ONNX_LOGGERS}
    path = export_onnx(torch.nn.Linear(3, 2).eval(), torch.zeros(1, 3), tmp_path / "l.onnx",
                       ["y"])
    assert path.is_file()
    assert {n: logging.getLogger(n).level for n in ONNX_LOGGERS} == before
    import onnx
    assert onnx.load(str(path)).opset_import[0].version == OPSET


def test_format_registry_rejects_unknown_formats() -> None:
    assert set(FORMATS) >= {"onnx", "tflite"}
    assert check_formats(["onnx", "onnx"]) == ("onnx",)
    with pytest.raises(ConfigError, match=r"unknown export formats.*choose from"):
        check_formats(["coreml"])


def test_atomic_writes_leave_old_file_on_failure(tmp_path: Path) -> None:
    p = atomic_write_json(tmp_path / "a.json", {"x": np.float32(1.5), "y": np.arange(2)})
    assert json.loads(p.read_text()) == {"x": 1.5, "y": [0, 1]}
    with pytest.raises(RuntimeError), atomic_file(p, "w") as f:
        f.write("half")
        raise RuntimeError("disk full")
    assert json.loads(p.read_text())["x"] == 1.5
    assert [q.name for q in tmp_path.iterdir()] == ["a.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask
    z = atomic_save_npz(tmp_path / "z.npz", a=np.ones(3))
    with np.load(z) as data:
        assert data["a"].sum() == 3
