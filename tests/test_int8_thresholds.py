"""int8 files calibrated on their own scores: the CLI build bakes thresholds chosen on the
int8 chain into its graphs, and the device runner on the calibration samples reproduces
exactly the operating point that calibration recorded (real data, real onnxruntime)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.helpers_cli import run_cli
from tests.helpers_data import SHARED_DATA, needs_fashion, write_fashion_folder

pytestmark = [pytest.mark.shared_data, needs_fashion, pytest.mark.slow]


def _threshold(path: Path) -> float:
    g = onnx.load(str(path)).graph
    (node,) = [n for n in g.node if n.op_type == "Greater" and n.input[0] == "confidence"]
    (init,) = [i for i in g.initializer if i.name == node.input[1]]
    return float(numpy_helper.to_array(init))


def test_int8_thresholds_match_their_calibration(tmp_path: Path) -> None:
    from edge_ee.calib_source import balanced_subset
    from edge_ee.data import load_fashion_mnist
    tr = load_fashion_mnist("train", SHARED_DATA / "fashion-mnist")
    te = load_fashion_mnist("test", SHARED_DATA / "fashion-mnist")
    data = write_fashion_folder(tmp_path / "fm", balanced_subset(tr, 3000, seed=1)[0],
                                balanced_subset(te, 1000, seed=1)[0])
    out = tmp_path / "b"
    r = run_cli("edge-ee", "build", "--model", "fashion-cnn", "--data", str(data), "--out",
             str(out), "--int8", "--calib-data", "test", "--calib-samples", "500",
             "--batch-size", "500", "--max-drop", "0.02")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "onnx-int8: thresholds on its own scores" in r.stderr
    m = json.loads((out / "manifest.json").read_text())
    rec = m["quantization"]["formats"]["onnx-int8"]["thresholds"]
    assert m["calibration"]["int8_thresholds"] == "own"
    assert rec["selection_samples"] == 500 and rec["search_samples"] == 300
    exits = m["segments"][:-1]
    assert exits, "the fp32 calibration kept no exit; nothing to test"
    for s in exits:
        i = s["index"]
        own = rec["thresholds"][str(i)]
        assert s["exit"]["thresholds_by_format"] == {"onnx-int8": own}
        assert rec["fp32_thresholds"][str(i)] == pytest.approx(s["exit"]["threshold"])
        # baked into the int8 graph; the fp32 graph keeps the fp32 threshold
        want = np.inf if own is None else own
        assert _threshold(out / s["files"]["onnx-int8"]) == pytest.approx(want, rel=1e-6)
        assert _threshold(out / s["files"]["onnx"]) == pytest.approx(s["exit"]["threshold"])
    agree = rec["agreement_with_fp32"]
    assert 0.5 < agree["exit_and_prediction"] <= agree["exit"] <= 1.0
    # the device runner on the calibration samples: exactly the promised point (up to a
    # sample whose confidence sits on the threshold)
    calib, _ = balanced_subset(load_fashion_mnist("test", data), 500, seed=0)
    np.savez(tmp_path / "calib.npz", x=calib.images, y=calib.labels)
    res = tmp_path / "r.json"
    r = run_cli("edge-ee-run", str(out), "--backend", "onnxruntime-int8", "--input",
             str(tmp_path / "calib.npz"), "--out", str(res), "--profile", "none", "--idle-s", "0",
             "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    smp = json.loads(res.read_text())["samples"]
    seg_exit = np.asarray(smp["exit"])
    acc = float((np.asarray(smp["prediction"]) == np.asarray(smp["label"])).mean())
    point = rec["point"]
    assert acc == pytest.approx(point["accuracy"], abs=2 / 500)
    points = [s["exit"]["exit_index"] for s in exits] + [len(point["exit_fractions"]) - 1]
    got = np.zeros(len(point["exit_fractions"]))
    for k, e in enumerate(points):
        got[e] = float((seg_exit == k).mean())
    assert got == pytest.approx(point["exit_fractions"], abs=2 / 500)
