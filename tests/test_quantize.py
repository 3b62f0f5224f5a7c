"""int8 post-training quantisation: ONNX QDQ bundle on a real model, head policy recorded,
int8 validation limits, and typed errors for bad calibration data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, fashion, fashion_fitted) -> Path:
    import torch

    from edge_ee.pipeline import export
    torch.set_num_threads(1)
    net, fitted = fashion_fitted
    out = tmp_path_factory.mktemp("bundles") / "fashion-int8"
    return export(net, fitted.heads, out, fashion[1], "fashion-int8", None, int8=True,
                  calibration_data=fashion[0], calibration_samples=128)


@pytest.mark.shared_data
def test_onnx_int8_bundle(int8_bundle: Path, fashion) -> None:
    from device_runners.backends import open_backend
    from device_runners.executor import run_batch
    from device_runners.golden import self_check
    from device_runners.manifest import load_bundle
    b = load_bundle(int8_bundle)
    assert b.formats == ["onnx", "onnx-int8"]
    m = b.manifest
    q = m["quantization"]
    assert q["calibration_samples"] == 128 and q["heads_policy"] == "auto"
    segs = q["formats"]["onnx-int8"]["segments"]
    assert len(segs) == len(b.segments)
    for s in segs:  # heads stay float exactly where int8 heads change decisions
        assert s["heads"] == ("float" if s["heads_int8_changes_decisions"] else "int8")
    v = m["validation_formats"]["onnx-int8"]
    assert v["end_to_end_agreement"] >= v["tolerance"]["min_end_to_end_agreement"]
    assert m["golden"]["formats"]["onnx-int8"]["atol"] > m["golden"]["atol"]
    be = open_backend(b, "onnxruntime-int8")
    assert self_check(b, be)["passed"]
    x, y = fashion[1].normalised(), fashion[1].labels
    rec, _, _ = run_batch(b, be, x, None)
    ref, _, _ = run_batch(b, open_backend(b, "onnxruntime"), x, None)
    assert np.mean(np.asarray(rec["exit"]) == np.asarray(ref["exit"])) >= 0.95
    acc8, acc = (np.mean(np.asarray(r["prediction"]) == y) for r in (rec, ref))
    assert acc8 >= acc - 0.02
    # QDQ: int8 weights, so the backbone files are smaller
    size = {f: sum((b.root / s["files"][f]).stat().st_size for s in b.segments) for f in b.formats}
    assert size["onnx-int8"] < size["onnx"]
    qnodes = [n for n in onnx.load(str(b.root / b.segments[0]["files"]["onnx-int8"])).graph.node
              if n.op_type == "QuantizeLinear"]
    assert qnodes


@pytest.mark.shared_data
def test_head_nodes_found_by_metadata_and_by_graph(int8_bundle: Path) -> None:
    from converters.quantize import onnx_head_nodes
    m = onnx.load(str(int8_bundle / "seg0.onnx"))
    by_meta = onnx_head_nodes(m)
    assert by_meta and any(m.graph.node[i].op_type == "MatMul" for i in range(len(m.graph.node))
                           if m.graph.node[i].name in by_meta)
    for node in m.graph.node:
        del node.metadata_props[:]
    assert set(onnx_head_nodes(m, "feature")) == set(by_meta)


def test_calibration_errors() -> None:
    from converters.quantize import check_calibration
    from edge_ee.errors import QuantizationError
    good = np.zeros((16, 1, 28, 28), np.float32)
    assert check_calibration(good, (1, 28, 28)).shape == good.shape
    with pytest.raises(QuantizationError, match=r"shape \(16, 3, 32, 32\).*\(N, 1, 28, 28\)"):
        check_calibration(np.zeros((16, 3, 32, 32), np.float32), (1, 28, 28))
    with pytest.raises(QuantizationError, match="NCHW"):
        check_calibration(np.zeros((16, 28, 28, 1), np.float32), (1, 28, 28))
    with pytest.raises(QuantizationError, match="uint8"):
        check_calibration(np.zeros((16, 1, 28, 28), np.uint8), (1, 28, 28))
    with pytest.raises(QuantizationError, match="at least 8"):
        check_calibration(good[:2], (1, 28, 28))
    with pytest.raises(QuantizationError, match="calibration samples"):
        check_calibration(None, (1, 28, 28))
    bad = good.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(QuantizationError, match="NaN"):
        check_calibration(bad, (1, 28, 28))


def test_wrong_calibration_shape_fails_before_export(tmp_path: Path) -> None:
    from converters.chain_bundle import write_chain_bundle
    from converters.spec import BundleSpec, image_input
    from edge_ee.errors import EdgeEEError, QuantizationError
    spec = BundleSpec("m", ("a", "b"), image_input((1, 28, 28)))
    with pytest.raises(QuantizationError) as e:
        write_chain_bundle([], spec, tmp_path / "b", np.zeros((2, 1, 28, 28), np.float32), int8=True,
                     calibration_x=np.zeros((32, 3, 32, 32), np.float32))
    assert isinstance(e.value, EdgeEEError) and e.value.exit_code == 2
    assert not (tmp_path / "b").exists()


def test_int8_validation_rejects_bad_chain() -> None:
    from converters.quantize import Int8Tolerance, validate_int8
    from edge_ee.errors import ExportValidationError

    class Plan:
        is_exit = True
        output_names = ("feature", "prediction", "confidence", "exit")

    class Flipped:  # an "int8 chain" that decides every exit the other way
        name = "fake-int8"

        def run(self, i, x):
            return {"feature": x, "prediction": np.zeros(len(x), np.int64),
                    "confidence": np.zeros(len(x), np.float32), "exit": np.ones(len(x), bool)}

    x = np.ones((10, 4), np.float32)
    ref = [{"feature": x, "prediction": np.zeros(10, np.int64),
            "confidence": np.zeros(10, np.float32), "exit": np.zeros(10, bool)}]
    with pytest.raises(ExportValidationError, match=r"exit agreement 0\.00%"):
        validate_int8([Plan()], Flipped(), x, ref, Int8Tolerance())


@pytest.mark.shared_data
def test_int8_files_lean(int8_bundle: Path) -> None:
    """int8 ONNX: no exporter debug metadata; float heads keep large constants float16 (cast
    back to float32 in the graph) where that changed no decision, as the manifest says."""
    from device_runners.manifest import load_bundle
    b = load_bundle(int8_bundle)
    segs = b.manifest["quantization"]["formats"]["onnx-int8"]["segments"]
    assert b.manifest["quantization"]["formats"]["onnx-int8"]["activations"].startswith("uint8")
    for s, entry in zip(segs, b.segments, strict=True):
        m = onnx.load(str(b.root / entry["files"]["onnx-int8"]))
        assert not any(n.metadata_props for n in m.graph.node)
        half = {i.name for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
        if s["heads"] == "int8":
            assert "head_constants" not in s and not half
            continue
        assert s["head_constants"] == ("float32" if s.get("head_constants_float16_changes_decisions")
                                       else s["head_constants"])
        if s["head_constants"] == "float16":
            assert half == {f"{n}_fp16" for n in s["float16_constants"]}
            assert all(not n.endswith("threshold") for n in s["float16_constants"])
            casts = [n for n in m.graph.node if n.op_type == "Cast"]
            assert {n.output[0] for n in casts} >= set(s["float16_constants"])


def test_reader_batches_equal() -> None:
    from converters.quantize import _Reader
    for n in (1, 7, 30, 510, 512):
        r, sizes = _Reader("x", np.zeros((n, 2), np.float32)), []
        while (b := r.get_next()) is not None:
            sizes.append(len(b["x"]))
        assert sum(sizes) == n and len(set(sizes)) == 1 and sizes[0] <= 16
