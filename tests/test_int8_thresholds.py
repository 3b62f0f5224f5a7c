"""int8 files calibrated on their own scores: the CLI build bakes thresholds chosen on the
int8 chain into its graphs, and the device runner on the calibration samples reproduces
exactly the operating point that calibration recorded (real data, real onnxruntime).
The Python API (`api.export_bundle(..., int8=True)`) gives the same thresholds as the CLI
on the same model and data; `--strategies split` leaves the in-graph files out."""

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


BUILD = ("--model", "fashion-cnn", "--int8", "--calib-data", "test", "--calib-samples", "500",
         "--batch-size", "500", "--max-drop", "0.02")


@pytest.fixture(scope="module")
def cli_bundle(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, bundle) of `edge-ee build --int8 --strategies split` on 3000/1000 images."""
    from edge_ee.calib_source import balanced_subset
    from edge_ee.data import load_fashion_mnist
    tmp = tmp_path_factory.mktemp("int8own")
    tr = load_fashion_mnist("train", SHARED_DATA / "fashion-mnist")
    te = load_fashion_mnist("test", SHARED_DATA / "fashion-mnist")
    data = write_fashion_folder(tmp / "fm", balanced_subset(tr, 3000, seed=1)[0],
                                balanced_subset(te, 1000, seed=1)[0])
    out = tmp / "b"
    r = run_cli("edge-ee", "build", *BUILD, "--data", str(data), "--out", str(out),
                "--strategies", "split")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "onnx-int8: thresholds on its own scores" in r.stderr
    return data, out


def test_strategies_flag_leaves_ingraph_out(cli_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = cli_bundle
    m = json.loads((out / "manifest.json").read_text())
    assert "strategies" not in m and not list(out.glob("ingraph*"))
    r = run_cli("edge-ee", "build", *BUILD, "--data", "unused", "--out", str(tmp_path / "x"),
                "--strategies", "ingraph")
    assert r.returncode == 2 and "split is always carried" in r.stderr
    r = run_cli("edge-ee", "build", "--help")
    assert "--strategies" in r.stdout and "split,ingraph" in r.stdout
    assert "doubles in size" in " ".join(r.stdout.split())


def test_int8_thresholds_match_their_calibration(cli_bundle: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    from edge_ee.calib_source import balanced_subset
    from edge_ee.data import load_fashion_mnist
    data, out = cli_bundle
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


def test_api_export_bundle_int8_thresholds_equal_the_cli(cli_bundle: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    """The same model, data and config through the Python API: the int8 files get the
    thresholds the CLI chose (one code path), and the API bundle carries both in-graph files."""
    from edge_ee import api
    from edge_ee.build import load_model, prepare_calibration
    from edge_ee.errors import ConfigError
    from edge_ee.int8_calibration import int8_thresholds_for
    data, cli_out = cli_bundle
    cfg = api.FitConfig(max_drop=0.02, batch_size=500, calib_data="test", calib_samples=500)
    net, train, test, _ = load_model("fashion-cnn", str(data))
    calib, _, _ = prepare_calibration(cfg, "fashion-cnn", train, test)
    fitted = api.fit(net, train, cfg, calib_data=calib, progress=False)
    with pytest.raises(ConfigError, match="calib_data"):  # chosen on calib_data: needs it
        int8_thresholds_for(fitted, "own", train)
    with pytest.raises(ConfigError, match="sha256"):  # other data than fp32's
        int8_thresholds_for(fitted, "own", train, calib.subset(np.arange(1, len(calib))))
    out = api.export_bundle(net, fitted, tmp_path / "api", test, "api-int8", int8=True,
                            calibration_data=train, calib_data=calib)
    cli = json.loads((cli_out / "manifest.json").read_text())
    got = json.loads((out / "manifest.json").read_text())
    assert got["calibration"]["int8_thresholds"] == "own"
    assert len(got["segments"]) == len(cli["segments"]) > 1
    for a, b in zip(got["segments"], cli["segments"], strict=True):
        assert a["exit"].get("threshold") == pytest.approx(b["exit"].get("threshold"))
        ta, tb = a["exit"].get("thresholds_by_format"), b["exit"].get("thresholds_by_format")
        assert (ta is None) == (tb is None)
        if ta is not None:
            assert ta["onnx-int8"] == pytest.approx(tb["onnx-int8"], rel=1e-6)
    rec = got["quantization"]["formats"]["onnx-int8"]["thresholds"]
    rec_cli = cli["quantization"]["formats"]["onnx-int8"]["thresholds"]
    for k in ("accuracy", "cost_fraction", "exit_fractions"):
        assert rec["point"][k] == pytest.approx(rec_cli["point"][k])
    assert got["strategies"]["ingraph"]["files"] == {"onnx": "ingraph.onnx",
                                                     "onnx-int8": "ingraph.int8.onnx"}
