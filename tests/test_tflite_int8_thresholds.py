"""TFLite int8 files get thresholds chosen on their own scores, like ONNX int8 files.

A small CNN built and trained here (not in the repository) gets E2CM exits
(trained 10 epochs, so that its exits and its last layer share the samples); the Python API
exports ONNX and TFLite with int8, the thresholds of each int8 format chosen on that
format's own chain (the LiteRT interpreter for `tflite-int8`) and written into its files
(the `GREATER` constant of the flatbuffer). The `edge-ee-run` CLI with the `tflite-int8`
backend on the selection samples must reproduce the operating point that calibration
recorded for that file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers_cli import run_cli
from tests.helpers_models import tiny_cnn

pytest.importorskip("litert_torch", reason="TFLite export needs litert-torch: pip install '.[tflite]'")
pytest.importorskip("ai_edge_litert", reason="the TFLite backend test needs ai-edge-litert")
# training, fit, int8 in two formats (PT2E per segment), validation: ~40 s
pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
KEY = "tflite-int8"


@pytest.fixture(scope="module")
def built(tmp_path_factory, fashion):
    from edge_ee import api
    from edge_ee.exitnet import from_sequential
    net = from_sequential(tiny_cnn(fashion[0], epochs=10, lr=3e-3), [0, 1, 2], (1, 28, 28),
                          "tiny-cnn")
    cfg = api.FitConfig(exit_spec=api.ExitSpec.parse("e2cm:2"))
    fitted = api.fit(net, fashion[0], cfg, progress=False)
    out = tmp_path_factory.mktemp("tflite8") / "tiny"
    path = api.export_bundle(net, fitted, out, fashion[1], "tiny-cnn", formats=("onnx", "tflite"),
                             int8=True, calibration_data=fashion[0])
    return path, fitted


def test_tflite_int8_thresholds_are_its_own(built, tmp_path: Path) -> None:
    from converters.formats.tflite import patch_tflite_threshold
    out, _ = built
    m = json.loads((out / "manifest.json").read_text())
    rec = m["quantization"]["formats"][KEY]["thresholds"]
    assert "LiteRT" in rec["source"]
    exits = m["segments"][:-1]
    for s in exits:
        own = s["exit"]["thresholds_by_format"]
        assert set(own) == {"onnx-int8", KEY} and own[KEY] == rec["thresholds"][str(s["index"])]
        assert rec["fp32_thresholds"][str(s["index"])] == pytest.approx(s["exit"]["threshold"])
        # written into the .tflite file (read back by patching a copy with the same value)
        copy = tmp_path / f"seg{s['index']}.tflite"
        shutil.copy(out / s["files"][KEY], copy)
        want = np.inf if own[KEY] is None else own[KEY]
        assert patch_tflite_threshold(copy, want) == pytest.approx(want, rel=1e-6)
        shutil.copy(out / s["files"]["tflite"], copy)  # the fp32 file keeps fp32's
        assert patch_tflite_threshold(copy, 0.0) == pytest.approx(s["exit"]["threshold"], rel=1e-6)
    assert m["validation_formats"][KEY]["end_to_end_agreement"] >= 0.95


def test_tflite_int8_runner_reproduces_its_calibration(built, fashion, tmp_path: Path) -> None:
    """The selection split (no calib_data: the training hold-out) through edge-ee-run."""
    from edge_ee.data import split_indices
    out, fitted = built
    m = json.loads((out / "manifest.json").read_text())
    point = m["quantization"]["formats"][KEY]["thresholds"]["point"]
    _, hold = split_indices(len(fashion[0]), fitted.config.calib_fraction, fitted.config.seed)
    sel = fashion[0].subset(hold)
    np.savez(tmp_path / "sel.npz", x=sel.images, y=sel.labels)
    res = tmp_path / "r.json"
    r = run_cli("edge-ee-run", str(out), "--backend", KEY, "--input", str(tmp_path / "sel.npz"),
                "--out", str(res), "--profile", "none", "--power-source", "null", "--idle-s",
                "0", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    smp = json.loads(res.read_text())["samples"]
    n = len(sel)
    acc = float((np.asarray(smp["prediction"]) == np.asarray(smp["label"])).mean())
    assert acc == pytest.approx(point["accuracy"], abs=2 / n)
    points = [s["exit"]["exit_index"] for s in m["segments"][:-1]] + [len(point["exit_fractions"]) - 1]
    got = np.zeros(len(point["exit_fractions"]))
    for k, e in enumerate(points):
        got[e] = float((np.asarray(smp["exit"]) == k).mean())
    assert got == pytest.approx(point["exit_fractions"], abs=2 / n)
    assert 0 < got[points[0]] < 1  # the first exit really decides
