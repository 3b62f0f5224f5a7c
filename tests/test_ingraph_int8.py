"""In-graph exits of int8 ONNX bundles, on real Fashion-MNIST images.

A small CNN built and trained here (not in the repository) gets E2CM exits
(trained 10 epochs, so that its exits and its last layer share the samples); the Python
API exports it with int8 files whose thresholds are chosen on their own scores (the path
`edge-ee build --int8` takes). The bundle must carry `ingraph.int8.onnx` beside
`ingraph.onnx`: assembled from the int8 segment files with their own thresholds,
validated against the int8 split, its int8 kernels intact inside the `If` branches after
onnxruntime's optimisation; through the real `onnxruntime-int8` backend and the
`edge-ee-run` CLI it must decide exactly as the int8 split, sample by sample and in
batches, and `--strategy auto` must choose among the int8 strategies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from device_runners.backends import open_backend
from device_runners.executor import execute
from device_runners.manifest import load_bundle
from device_runners.strategies import INGRAPH, available, execute_ingraph
from tests.helpers_cli import run_cli
from tests.helpers_models import tiny_cnn

# training, fit, two int8 quantisations per segment, validation: ~30 s
pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
INT8 = "onnx-int8"


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, fashion) -> Path:
    from edge_ee import api
    from edge_ee.exitnet import from_sequential
    net = from_sequential(tiny_cnn(fashion[0], epochs=10, lr=3e-3), [0, 1, 2], (1, 28, 28),
                          "tiny-cnn")
    fitted = api.fit(net, fashion[0], api.FitConfig(exit_spec=api.ExitSpec.parse("e2cm:2")),
                     progress=False)
    assert any(t < np.inf for t in fitted.chosen.thresholds[:-1]), "no exit kept"
    out = tmp_path_factory.mktemp("ingraph8") / "tiny8"
    return api.export_bundle(net, fitted, out, fashion[1], "tiny-cnn", int8=True,
                             calibration_data=fashion[0])


def _greater_thresholds(g: onnx.GraphProto, found: list[float]) -> list[float]:
    """The constant thresholds of every `Greater` node, `If` branches included, in order."""
    consts = {i.name: float(numpy_helper.to_array(i).reshape(-1)[0]) for i in g.initializer
              if int(np.prod(i.dims)) == 1 and i.data_type == onnx.TensorProto.FLOAT}
    for n in g.node:
        if n.op_type == "Greater" and n.input[1] in consts:
            found.append(consts[n.input[1]])
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH and a.name == "else_branch":
                _greater_thresholds(a.g, found)
    return found


def test_int8_ingraph_is_validated_and_listed(int8_bundle: Path) -> None:
    m = json.loads((int8_bundle / "manifest.json").read_text())
    entry = m["strategies"][INGRAPH]
    assert entry["files"] == {"onnx": "ingraph.onnx", INT8: "ingraph.int8.onnx"}
    assert {"ingraph.onnx", "ingraph.int8.onnx"} <= set(m["files"])
    assert m["calibration"]["int8_thresholds"] == "own"
    rec = entry["validation_by_format"][INT8]
    assert rec["split"]["passed"] and rec["split"]["samples"] == 64
    assert rec["split"]["exit_agreement"] == 1.0 and rec["split"]["prediction_agreement"] == 1.0
    # onnxruntime fuses the QDQ pairs into the same int8 kernels inside the If branches
    ops = rec["int8_kernels_after_optimisation"]
    kernels = {g: {k: v for k, v in c.items() if "Quantize" not in k} for g, c in ops.items()}
    assert kernels["ingraph"] == kernels["split"] and kernels["ingraph"].get("QLinearConv", 0) >= 3
    assert m["self_check_formats"][INT8]["ingraph"]["passed"]
    # the int8 graph compares with the int8 files' own thresholds, the fp32 graph with fp32's
    own = [s["exit"]["thresholds_by_format"][INT8] for s in m["segments"][:-1]]
    fp32 = [s["exit"]["threshold"] for s in m["segments"][:-1]]
    assert own != fp32
    got8 = _greater_thresholds(onnx.load(str(int8_bundle / "ingraph.int8.onnx")).graph, [])
    got32 = _greater_thresholds(onnx.load(str(int8_bundle / "ingraph.onnx")).graph, [])
    assert got8 == pytest.approx([np.inf if t is None else t for t in own], rel=1e-6)
    assert got32 == pytest.approx(fp32, rel=1e-6)


def test_int8_ingraph_equals_int8_split(int8_bundle: Path, fashion) -> None:
    b = load_bundle(int8_bundle)
    be = open_backend(b, "onnxruntime-int8")
    assert available(b, be) == ["split", INGRAPH]
    x = fashion[1].subset(np.arange(0, 500, 5)).normalised()  # 100 images, all classes
    for n in range(len(x)):
        s, g = execute(b, be, x[n : n + 1]), execute_ingraph(b, be, x[n : n + 1])
        assert g.exit.tolist() == s.exit.tolist() and g.prediction.tolist() == s.prediction.tolist()
        np.testing.assert_allclose(g.confidence, s.confidence, atol=1e-6)
    split, ingraph = execute(b, be, x), execute_ingraph(b, be, x)  # a batch: rows mix exits
    assert ingraph.exit.tolist() == split.exit.tolist()
    assert ingraph.prediction.tolist() == split.prediction.tolist()
    assert len(set(split.exit.tolist())) > 1  # exits really fire, and not everywhere


def test_runner_cli_int8_strategies(int8_bundle: Path, fashion_samples: Path,
                                    tmp_path: Path) -> None:
    res = {}
    for strategy in ("split", "ingraph", "auto"):
        out = tmp_path / f"{strategy}.json"
        r = run_cli("edge-ee-run", str(int8_bundle), "--backend", "onnxruntime-int8",
                    "--input", str(fashion_samples), "--out", str(out), "--strategy", strategy,
                    "--profile", "none", "--power-source", "null", "--idle-s", "0", "--quiet")
        assert r.returncode == 0, r.stderr[-2000:]
        res[strategy] = json.loads(out.read_text())
    for k in ("exit", "prediction"):
        assert res["ingraph"]["samples"][k] == res["split"]["samples"][k]
    assert res["ingraph"]["strategy"]["name"] == INGRAPH
    assert res["ingraph"]["self_check"]["ingraph"]["passed"]
    auto = res["auto"]["strategy"]
    assert auto["available"] == ["split", INGRAPH]
    med = auto["measured_median_ns"]
    assert auto["name"] == min(med, key=med.get) and all(v > 0 for v in med.values())
    assert res["auto"]["samples"]["exit"] == res["split"]["samples"]["exit"]
