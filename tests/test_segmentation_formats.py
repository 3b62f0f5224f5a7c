"""Segmentation bundles on TFLite, int8 ONNX and in batch mode (token exits, CBT).

The shipped CamVid model as a CBT bundle with `--formats onnx,tflite --int8`, run with
`edge-ee-run` (real subprocess) on real CamVid test images: TFLite reproduces ONNX fp32,
int8 (ONNX QDQ and TFLite PT2E) stays close, `--mode batch` gives exactly the
single-mode results and its report; TFLite refuses batches with a typed error. A
small segmentation net that is not in the repo (other grid, channels, classes and
stages; built here) goes through the same writer so nothing depends on the shipped
shapes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_ee.data import shared_data_dir
from tests.helpers_data import camvid_test

# every bundle here carries TFLite files (the README's quick-start install has no tflite
# extra; CI installs it, so nothing skips there)
pytest.importorskip("litert_torch", reason="TFLite export needs litert-torch: pip install '.[tflite]'")
pytest.importorskip("ai_edge_litert", reason="the TFLite backend needs ai-edge-litert: "
                    "pip install '.[tflite]'")

ROOT = Path(__file__).resolve().parents[1]
CAMVID = shared_data_dir() / "camvid-120x160.npz"
pytestmark = pytest.mark.shared_data
COMMON = ("--profile", "none", "--power-source", "null", "--idle-s", "0", "--warmup-runs", "1",
          "--quiet")


@pytest.fixture(scope="module")
def camvid():
    return camvid_test(CAMVID)


@pytest.fixture(scope="module")
def seg_formats_bundle(tmp_path_factory, camvid) -> Path:
    from edge_ee.segmentation.build import SegBuildConfig, build_seg_bundle
    return build_seg_bundle(SegBuildConfig(
        out=str(tmp_path_factory.mktemp("segfmt") / "cbt"), mode="cbt", alpha=0.9, beta=0.998,
        data=str(CAMVID), calib_images=4, validation_images=2, golden_count=1,
        formats=("onnx", "tflite"), int8=True, int8_calib_images=8))


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "device_runners.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)


def test_manifest_lists_every_format(seg_formats_bundle) -> None:
    from device_runners.manifest import load_bundle
    m = load_bundle(seg_formats_bundle).manifest
    assert {"seg1.tflite", "seg3.int8.onnx", "seg3.int8.tflite", "assemble.tflite"} <= set(
        m["files"])
    pad = m["segments"][1]["padding"]
    assert pad == {"input": "idx", "axis": 0, "sizes": [75, 150, 300, 600, 1200], "value": 1200,
                   "outputs": ["logits", "exit_mask"]}
    assert "padding" not in m["segments"][0]
    v = m["validation_formats"]
    assert set(v) == {"onnx", "tflite", "onnx-int8", "tflite-int8"}
    assert v["tflite"]["exit_agreement"] == 1.0 and v["tflite"]["max_abs_logit_diff"] < 1e-4
    for fmt in ("onnx-int8", "tflite-int8"):
        assert v[fmt]["exit_agreement"] >= 0.9 and v[fmt]["pixel_agreement"] >= 0.95
    assert all(c["passed"] for c in m["self_check_formats"].values())
    assert m["quantization"]["formats"]["tflite-int8"]["segments"][0]["heads"] == "float"


def _miou(conf: list) -> float:
    from edge_ee.segmentation.metrics import mean_iou
    return mean_iou(np.sum([np.asarray(v).reshape(11, 11) for v in conf], axis=0))


def test_tflite_int8_and_batch_through_edge_ee_run(seg_formats_bundle, camvid,
                                                   tmp_path: Path) -> None:
    pick = [5, 70, 140, 220]  # spread over the (sequence-sorted) test split
    inp = tmp_path / "camvid4.npz"
    np.savez(inp, x=camvid.images[pick], y=camvid.labels[pick])
    runs = {"onnx": ("--backend", "onnxruntime"), "tflite": ("--backend", "tflite"),
            "int8": ("--backend", "onnxruntime-int8"), "tflite_int8": ("--backend", "tflite-int8"),
            "batch": ("--backend", "onnxruntime", "--mode", "batch", "--batch-size", "3")}
    res = {}
    for name, flags in runs.items():
        out = tmp_path / f"{name}.json"
        r = _run(str(seg_formats_bundle), "--input", str(inp), "--out", str(out), *COMMON, *flags)
        assert r.returncode == 0, r.stderr
        res[name] = json.loads(out.read_text())
    ref = res["onnx"]["samples"]
    assert all(res[n]["self_check"]["passed"] for n in ("tflite", "int8", "tflite_int8"))
    # batch mode: the same per-image results as single mode, in 2 calls (3 + 1 images)
    batch = res["batch"]
    assert batch["samples"]["tokens_per_exit"] == ref["tokens_per_exit"]
    assert batch["samples"]["confusion"] == ref["confusion"]
    assert [b["size"] for b in batch["batches"]] == [3, 1]
    assert batch["batches"][0]["active"][0] == 3 * 1200 and "latency_ns" not in batch["samples"]
    # TFLite fp32 takes the same exits (float rounding may flip a token at a threshold)
    got = np.asarray(res["tflite"]["samples"]["tokens_per_exit"])
    assert np.abs(got - np.asarray(ref["tokens_per_exit"])).sum() <= 4
    assert abs(_miou(res["tflite"]["samples"]["confusion"]) - _miou(ref["confusion"])) < 1e-3
    # int8: close to fp32, not equal
    for n in ("int8", "tflite_int8"):
        assert abs(_miou(res[n]["samples"]["confusion"]) - _miou(ref["confusion"])) < 0.02
    # the report reads batch results (latency per image from the batches)
    from edge_ee.cli import main
    rep = tmp_path / "rep"
    assert main(["report", str(tmp_path / "onnx.json"), str(tmp_path / "batch.json"), "--bundle",
                 str(seg_formats_bundle), str(seg_formats_bundle), "--names", "single", "batch",
                 "--out", str(rep)]) == 0
    report = json.loads((rep / "report.json").read_text())
    assert report["batch"]["miou"] == pytest.approx(report["single"]["miou"])
    assert report["batch"]["batch_latency_ns_per_sample"] > 0


def test_tflite_refuses_batches_with_a_typed_error(seg_formats_bundle, camvid,
                                                   tmp_path: Path) -> None:
    inp = tmp_path / "camvid2.npz"
    np.savez(inp, x=camvid.images[[10, 150]])
    r = _run(str(seg_formats_bundle), "--input", str(inp), "--out", str(tmp_path / "r.json"),
             "--backend", "tflite", "--mode", "batch", "--batch-size", "2", *COMMON)
    assert r.returncode == 2 and "--mode single" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def small_seg_bundle(tmp_path_factory, camvid):
    """A segmentation net not in the repo: 64x96 crops, 16x24 tokens, 16 channels, 5
    classes, stages (1, 2, 1); random weights with sharpened exit heads, per-class
    thresholds around the median exit-0 confidence, so that tokens stop at every exit."""
    import torch

    from edge_ee.segmentation.bundle import SegBundleOptions, write_seg_bundle
    from edge_ee.segmentation.data import normalize_images
    from edge_ee.segmentation.model import EarlyExitSegNet, SegNetConfig

    torch.manual_seed(0)
    cfg = SegNetConfig(num_classes=5, image_hw=(64, 96), stem_channels=(8, 16),
                       token_channels=16, mlp_ratio=2, dw_kernel=3, blocks_per_stage=(1, 2, 1))
    model = EarlyExitSegNet(cfg).eval()
    with torch.no_grad():  # random heads are nearly uniform: sharpen them
        for head, scale in zip(model.exits, (8.0, 20.0, 8.0), strict=True):
            head.weight.mul_(scale)
    crops = normalize_images(camvid.images[::12, 30:94, 40:136])
    with torch.no_grad():
        p0 = torch.softmax(model(torch.from_numpy(crops[:3]))[0], dim=1).amax(1)
    thr = (float(p0.median()) * np.array([0.99, 1.0, 1.0, 1.01, 1.02])).astype(np.float32)
    out = tmp_path_factory.mktemp("smallseg") / "b"
    options = SegBundleOptions(golden_count=1, formats=("onnx", "tflite"), int8=True,
                               int8_min_exit_agreement=0.5, int8_min_pixel_agreement=0.5)
    path = write_seg_bundle(model, out, thr, crops[:3], name="small", options=options,
                            calibration_images=crops[3:11])
    return path, crops[11:16]


def test_small_model_batch_equals_single_and_tflite_equals_onnx(small_seg_bundle) -> None:
    from device_runners.backends import open_backend
    from device_runners.executor import execute
    from device_runners.manifest import load_bundle

    path, x = small_seg_bundle
    b = load_bundle(path)
    assert b.manifest["segments"][1]["padding"]["sizes"] == [24, 48, 96, 192, 384]
    onnx, tfl = open_backend(b, "onnxruntime"), open_backend(b, "tflite")
    batch = execute(b, onnx, x)
    assert batch.exit.shape == (len(x), 384) and batch.prediction.shape == (len(x), 64, 96)
    counts = np.bincount(batch.exit.ravel(), minlength=3)
    assert (counts > 0).all(), f"tokens should stop at every exit, got {counts.tolist()}"
    assert batch.active[0] == len(x) * 384 and batch.active == sorted(batch.active, reverse=True)
    for n in range(len(x)):
        one = execute(b, onnx, x[n : n + 1])
        assert np.array_equal(one.exit[0], batch.exit[n])
        assert np.array_equal(one.prediction[0], batch.prediction[n])
        np.testing.assert_allclose(one.extra["token_logits"][0], batch.extra["token_logits"][n],
                                   atol=1e-5)
        lite = execute(b, tfl, x[n : n + 1])
        assert (lite.exit[0] == one.exit[0]).mean() >= 0.99
        assert (lite.prediction[0] == one.prediction[0]).mean() >= 0.99
    int8 = execute(b, open_backend(b, "onnxruntime-int8"), x)
    assert int8.exit.shape == batch.exit.shape
    lite8 = execute(b, open_backend(b, "tflite-int8"), x[:1])
    assert lite8.exit.shape == (1, 384) and (lite8.exit >= 0).all()
    assert set(b.manifest["validation_formats"]) == {"onnx", "tflite", "onnx-int8", "tflite-int8"}
