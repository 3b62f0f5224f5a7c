"""Export → bundle → torch-free runner, on the shipped Fashion-MNIST CNN with real images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from converters.validate import Tolerance
from device_runners.backends import open_backend
from device_runners.errors import ChecksumError, InputSpecError, SchemaVersionError
from device_runners.executor import run_batch, run_single
from device_runners.golden import self_check
from device_runners.manifest import load_bundle, prepare_input
from edge_ee.errors import BundleError, ExportValidationError
from edge_ee.pipeline import evaluate_split, export

pytestmark = pytest.mark.shared_data


def test_manifest_contract(fashion_bundle: Path) -> None:
    b = load_bundle(fashion_bundle)
    m = b.manifest
    assert m["schema_version"] == 1 and m["kind"] == "edge-ee-bundle"
    assert m["segments"][-1]["exit"]["kind"] == "final"
    kept = [s for s in m["segments"] if s["exit"]["kind"] == "e2cm"]
    assert kept and all(np.isfinite(s["exit"]["threshold"]) for s in kept)
    assert set(m["files"]) == ({f"seg{i}.onnx" for i in range(len(m["segments"]))}
                               | {"golden.npz", "ingraph.onnx"})  # in-graph exits beside
    assert m["validation"]["samples"] == 64 and m["self_check"]["passed"]
    assert sum(s["flops"] for s in m["segments"]) > m["cost"]["full_flops"]  # heads add cost
    assert m["input"]["raw"]["dtype"] == "uint8"


def test_runner_matches_torch_decisions(fashion, fashion_fitted, fashion_bundle: Path) -> None:
    net, fitted = fashion_fitted
    test = fashion[1].subset(np.arange(200))
    table = evaluate_split(net, fitted.heads, test, fitted.costs, progress=False)
    exits = table.assign(np.asarray(fitted.chosen.thresholds))
    want_pred = table.pred[exits, np.arange(200)]
    b = load_bundle(fashion_bundle)
    be = open_backend(b)
    x = prepare_input(b, test.images)
    rec, complete = run_single(b, be, x, test.labels)
    assert complete
    seg_exit = [b.segments[i]["exit"].get("exit_index") for i in rec["exit"]]
    want_exit = [None if e == net.num_exits else int(e) for e in exits]
    assert np.mean(np.array(seg_exit, object) == np.array(want_exit, object)) >= 0.99
    assert np.mean(np.asarray(rec["prediction"]) == want_pred) >= 0.99
    assert all(len(v) == i + 1 for v, i in zip(rec["segment_latency_ns"], rec["exit"], strict=False))
    brec, batches, ok = run_batch(b, be, x, test.labels, batch_size=32)
    assert ok and brec["prediction"] == rec["prediction"] and brec["exit"] == rec["exit"]
    assert all(a == sorted(a, reverse=True) for a in (bt["active"] for bt in batches))


def test_tampered_file_is_refused(tmp_path: Path, fashion_bundle: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(fashion_bundle, copy)
    with open(copy / "seg0.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00")
    with pytest.raises(ChecksumError, match=r"seg0\.onnx.*re-copy"):
        load_bundle(copy)


def test_newer_schema_is_refused(tmp_path: Path, fashion_bundle: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(fashion_bundle, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SchemaVersionError, match="upgrade edge-ee"):
        load_bundle(copy)


def test_wrong_input_shape_or_dtype(fashion_bundle: Path) -> None:
    b = load_bundle(fashion_bundle)
    with pytest.raises(InputSpecError, match="expects float32"):
        prepare_input(b, np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(InputSpecError):
        prepare_input(b, np.zeros((2, 28, 28, 1), np.int32))
    assert prepare_input(b, np.zeros((2, 28, 28, 1), np.uint8)).shape == (2, 1, 28, 28)


def test_self_check_passes_on_this_runtime(fashion_bundle: Path) -> None:
    b = load_bundle(fashion_bundle)
    assert self_check(b, open_backend(b))["passed"]


@pytest.mark.slow
def test_failed_validation_leaves_nothing(tmp_path: Path, fashion, fashion_fitted) -> None:
    net, fitted = fashion_fitted
    out = tmp_path / "never"
    # a negative tolerance fails validation against torch, or the manifest schema (ranges)
    with pytest.raises((ExportValidationError, BundleError), match=r"differs from torch|>= 0"):
        export(net, fitted.heads, out, fashion[1], "x", tol=Tolerance(atol=-1.0, rtol=0.0))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_bundle_is_not_overwritten_silently(tmp_path: Path, fashion, fashion_fitted
                                                     ) -> None:
    net, fitted = fashion_fitted
    (tmp_path / "b").mkdir()
    with pytest.raises(BundleError, match="--overwrite"):
        export(net, fitted.heads, tmp_path / "b", fashion[1], "x")


def test_bundle_graph_constants_are_the_class_means(fashion_fitted, fashion_bundle: Path) -> None:
    import onnx
    from onnx import numpy_helper
    _net, fitted = fashion_fitted
    b = load_bundle(fashion_bundle)
    seg = b.segments[0]
    head = fitted.heads[seg["exit"]["exit_index"]]
    model = onnx.load(str(b.segment_path(0, "onnx")))
    consts = [numpy_helper.to_array(t) for t in model.graph.initializer]
    means = head.scorer.means_t.numpy()
    assert any(c.shape == means.shape and np.allclose(c, means) for c in consts)
    thr = float(head.threshold)
    assert any(c.size == 1 and np.isclose(float(c.reshape(-1)[0]), thr) for c in consts)
    assert torch.isfinite(head.threshold)
