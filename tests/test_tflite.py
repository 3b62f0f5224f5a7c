"""TFLite export (litert-torch) and the TFLite backend: a real bundle with onnx + tflite
(+ int8) files, decisions equal across runtimes, and the error paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("litert_torch", reason="TFLite export needs litert-torch: pip install '.[tflite]'")
pytest.importorskip("ai_edge_litert", reason="the TFLite backend test needs ai-edge-litert")


@pytest.fixture(scope="module")
def all_formats_bundle(tmp_path_factory, fashion, fashion_fitted) -> Path:
    """The shipped Fashion-MNIST CNN with E2CM exits as onnx, tflite and both int8 files."""
    import torch

    from edge_ee.pipeline import export
    torch.set_num_threads(1)
    net, fitted = fashion_fitted
    out = tmp_path_factory.mktemp("bundles") / "fashion-all"
    return export(net, fitted.heads, out, fashion[1], "fashion-formats", None,
                  formats=("onnx", "tflite"), int8=True, calibration_data=fashion[0],
                  calibration_samples=128)


@pytest.mark.shared_data
def test_manifest_lists_every_format(all_formats_bundle: Path) -> None:
    from device_runners.manifest import load_bundle
    b = load_bundle(all_formats_bundle)
    assert b.formats == ["onnx", "onnx-int8", "tflite", "tflite-int8"]
    for seg in b.segments:
        i = seg["index"]
        assert seg["files"] == {"onnx": f"seg{i}.onnx", "tflite": f"seg{i}.tflite",
                                "onnx-int8": f"seg{i}.int8.onnx",
                                "tflite-int8": f"seg{i}.int8.tflite"}
    m = b.manifest
    assert set(m["validation_formats"]) == set(b.formats)
    assert all(c["passed"] for c in m["self_check_formats"].values())
    # fp32 TFLite is the torch graph: features within float rounding
    for seg in m["validation_formats"]["tflite"]["segments"]:
        assert seg.get("feature_max_abs_err", 0.0) < 1e-4
        assert seg["exit_agreement"] == 1.0 if "exit_agreement" in seg else True
    assert m["golden"]["formats"]["tflite"]["prefix"] == "tflite/"
    assert "litert_torch_version" in m["provenance"]


@pytest.mark.shared_data
def test_tflite_runs_like_onnx(all_formats_bundle: Path, fashion) -> None:
    from device_runners.backends import open_backend
    from device_runners.executor import run_batch, run_single
    from device_runners.golden import self_check
    from device_runners.manifest import load_bundle
    b = load_bundle(all_formats_bundle)
    x = fashion[1].subset(np.arange(100)).normalised()
    onnx_rec, _, _ = run_batch(b, open_backend(b, "onnxruntime"), x, None, batch_size=32)
    tfl = open_backend(b, "tflite", threads=2)
    assert tfl.version().startswith(("ai-edge-litert", "tflite-runtime"))
    assert self_check(b, tfl)["passed"]
    rec, _, _ = run_batch(b, tfl, x, None, batch_size=32)
    assert rec["exit"] == onnx_rec["exit"] and rec["prediction"] == onnx_rec["prediction"]
    single, done = run_single(b, tfl, x[:20], None)
    assert done and single["exit"] == onnx_rec["exit"][:20]
    out = tfl.run(0, x[:3])
    assert out["prediction"].dtype == np.int64 and out["exit"].dtype == np.bool_
    assert list(out) == b.segments[0]["outputs"]


@pytest.mark.shared_data
def test_int8_tflite_and_onnx_agree_with_fp32(all_formats_bundle: Path, fashion) -> None:
    from device_runners.backends import open_backend
    from device_runners.executor import run_batch
    from device_runners.golden import self_check
    from device_runners.manifest import load_bundle
    b = load_bundle(all_formats_bundle)
    x, y = fashion[1].normalised(), fashion[1].labels
    ref, _, _ = run_batch(b, open_backend(b, "onnxruntime"), x, None)
    for name in ("onnxruntime-int8", "tflite-int8"):
        be = open_backend(b, name)
        assert self_check(b, be)["passed"]
        rec, _, _ = run_batch(b, be, x, None)
        exit_agree = np.mean(np.asarray(rec["exit"]) == np.asarray(ref["exit"]))
        acc, acc_ref = (np.mean(np.asarray(r["prediction"]) == y) for r in (rec, ref))
        assert exit_agree >= 0.95, name
        assert acc >= acc_ref - 0.02, name
    q = b.manifest["quantization"]["formats"]
    for fmt in ("onnx-int8", "tflite-int8"):
        for seg in q[fmt]["segments"]:
            assert seg["heads"] in ("float", "int8")
            assert "agreement_heads_float" in seg and "agreement_heads_int8" in seg


@pytest.mark.shared_data
def test_unreadable_op_names_op_and_fix(all_formats_bundle: Path, monkeypatch) -> None:
    from device_runners.backends import tflite as backend_tflite
    from device_runners.errors import BackendError
    from device_runners.manifest import load_bundle

    class OldInterpreter:  # what tflite-runtime 2.14 says about a newer op version
        def __init__(self, model_path: str, num_threads: int = 1) -> None:
            raise ValueError("Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. "
                             "An older version of this builtin might be supported.")

    monkeypatch.setattr(backend_tflite, "load_interpreter_class",
                        lambda: (OldInterpreter, "tflite-runtime 2.14.0"))
    with pytest.raises(BackendError, match=r"FULLY_CONNECTED version 12.*ai-edge-litert"):
        backend_tflite.TFLiteBackend(load_bundle(all_formats_bundle))


def test_no_interpreter_installed(monkeypatch) -> None:
    import builtins

    from device_runners.backends import tflite as backend_tflite
    from device_runners.errors import BackendError
    real = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith(("ai_edge_litert", "tflite_runtime")):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(BackendError, match="pip install ai-edge-litert"):
        backend_tflite.load_interpreter_class()


@pytest.mark.shared_data
def test_format_not_in_bundle(fashion_bundle: Path) -> None:
    from device_runners.backends import open_backend
    from device_runners.errors import BackendError, BundleError
    from device_runners.manifest import load_bundle
    b = load_bundle(fashion_bundle)  # ONNX only
    with pytest.raises(BackendError, match="needs 'tflite' files"):
        open_backend(b, "tflite")
    with pytest.raises(BundleError, match="no 'tflite' file"):
        b.segment_path(0, "tflite")


def test_unknown_export_format(tmp_path: Path) -> None:
    from converters.chain_bundle import write_chain_bundle
    from converters.spec import BundleSpec, image_input
    from edge_ee.errors import ConfigError
    spec = BundleSpec("m", ("a", "b"), image_input((1, 4, 4)))
    with pytest.raises(ConfigError, match="unknown export formats"):
        write_chain_bundle([], spec, tmp_path / "b", np.zeros((2, 1, 4, 4), np.float32),
                     formats=("onnx", "coreml"))
    assert not (tmp_path / "b").exists()


def test_cli_build_has_format_flags() -> None:
    from edge_ee.cli import build_parser
    a = build_parser().parse_args(["build", "--model", "fashion-cnn", "--out", "x",
                                   "--formats", "onnx,tflite", "--int8"])
    assert a.formats == "onnx,tflite" and a.int8
    assert json.dumps(vars(a))  # plain values only
