"""Segmentation bundles end to end: export + validation, `edge-ee-run` (real subprocess,
real onnxruntime), torch-free device side, `edge-ee report`, and bad input.

Uses the shipped weights and a few real CamVid images from ../shared/data; bundles are
built once per module (CBT from 4 training images, validated on 2 test images).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html import escape
from pathlib import Path

import numpy as np
import pytest

from device_runners.errors import ChecksumError, InputSpecError, SelfCheckError
from edge_ee.data import shared_data_dir
from edge_ee.errors import EdgeEEError, ExportValidationError
from edge_ee.segmentation.errors import SegmentationError
from tests.helpers_data import camvid_test

ROOT = Path(__file__).resolve().parents[1]
CAMVID = shared_data_dir() / "camvid-120x160.npz"
pytestmark = pytest.mark.shared_data
ALPHA, BETA = 0.9, 0.998


@pytest.fixture(scope="module")
def camvid():
    return camvid_test(CAMVID)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, camvid) -> dict[str, Path]:
    from edge_ee.segmentation.build import SegBuildConfig, build_seg_bundle
    root = tmp_path_factory.mktemp("segbundles")
    out = {}
    for name, mode in (("cbt", "cbt"), ("full", "full")):
        out[name] = build_seg_bundle(SegBuildConfig(
            out=str(root / name), mode=mode, alpha=ALPHA, beta=BETA, data=str(CAMVID),
            calib_images=4, validation_images=2, golden_count=1))
    return out


@pytest.fixture(scope="module")
def samples(tmp_path_factory, camvid) -> Path:
    p = tmp_path_factory.mktemp("segin") / "camvid3.npz"
    np.savez(p, x=camvid.images[[0, 60, 150]], y=camvid.labels[[0, 60, 150]])
    return p


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "device_runners.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)


COMMON = ("--profile", "none", "--power-source", "null", "--idle-s", "0", "--warmup-runs", "1",
          "--quiet")


def test_manifest_follows_the_bundle_contract(bundles) -> None:
    from device_runners.manifest import load_bundle
    b = load_bundle(bundles["cbt"])  # schema + sha256 of every file
    m = b.manifest
    assert m["model"]["task"] == "segmentation" and m["model"]["variant"] == "cbt"
    seg = m["segmentation"]
    assert seg["void_label"] == 11 and seg["token_hw"] == [30, 40] and len(m["classes"]) == 11
    assert set(m["files"]) == {"seg0.onnx", "seg1.onnx", "seg2.onnx", "seg3.onnx",
                               "assemble.onnx", "golden.npz"}
    thr = np.array(seg["thresholds"])
    assert thr.min() == pytest.approx(ALPHA, abs=1e-6) and thr.max() == pytest.approx(BETA, abs=1e-6)
    assert m["segments"][0]["exit"]["thresholds"] == seg["thresholds"]
    assert m["segments"][-1]["exit"]["kind"] == "final"
    cost = seg["cost"]
    full = cost["stem_flops"] + sum(cost["dense_flops"]) + 1200 * sum(cost["per_token_flops"])
    assert full == cost["full_flops"] == sum(s["flops"] for s in m["segments"])
    assert m["validation"]["exit_agreement"] >= 0.999 and m["self_check"]["passed"]
    # classes absent from the 4 calibration images get beta (treated as the hardest)
    cal = m["calibration"]
    for name in cal["absent_classes"]:
        assert thr[m["classes"].index(name)] == pytest.approx(BETA, abs=1e-6)
    assert "beta" in cal["absent_rule"]
    mono = load_bundle(bundles["full"]).manifest
    assert [s["name"] for s in mono["segments"]] == ["full"] and mono["segmentation"]["monolithic"]


def test_edge_ee_run_and_report(bundles, samples, tmp_path: Path) -> None:
    outs = {}
    for name, extra in (("cbt", ()), ("full", ()), ("cbt_noexit", ("--no-exit",))):
        outs[name] = tmp_path / f"{name}.json"
        r = _run(str(bundles[name.split("_")[0]]), "--input", str(samples), "--out",
                 str(outs[name]), *COMMON, *extra)
        assert r.returncode == 0, r.stderr
    res = json.loads(outs["cbt"].read_text())
    s = res["samples"]
    assert res["task"] == "segmentation" and res["self_check"]["passed"]
    assert len(s["latency_ns"]) == 3 and all(sum(t) == 1200 for t in s["tokens_per_exit"])
    assert all(len(v) >= 1 and v[0] > 0 for v in s["segment_latency_ns"])
    labels = np.load(samples)["y"]
    for conf, y in zip(s["confusion"], labels, strict=True):
        assert sum(conf) == int((y != 11).sum())
    assert len(res["exit_maps"]["token_exit"][0]) == 1200
    noexit = json.loads(outs["cbt_noexit"].read_text())["samples"]
    assert all(t == [0, 0, 0, 1200] for t in noexit["tokens_per_exit"])
    assert all(len(v) == 4 for v in noexit["segment_latency_ns"])
    from edge_ee.cli import main
    rep = tmp_path / "rep"
    assert main(["report", str(outs["full"]), str(outs["cbt"]), "--bundle", str(bundles["full"]),
                 str(bundles["cbt"]), "--names", "full", "cbt", "--out", str(rep)]) == 0
    md = (rep / "report.md").read_text()
    assert "| mIoU |" in md and "Per-class thresholds" in md and "IoU per class" in md
    assert {p.name for p in (rep / "figures").iterdir()} >= {
        "metric_cost.png", "metric_latency.png", "thresholds.png", "overlays.png", "exits.png"}
    assert (rep / "tables" / "overview.csv").is_file()
    html = (rep / "report.html").read_text()
    assert "data:image/png;base64" in html and "<script" not in html and "src='http" not in html
    report = json.loads((rep / "report.json").read_text())
    assert report["full"]["expected_flops"] == pytest.approx(report["full"]["full_flops"])
    assert report["cbt"]["expected_flops"] < report["full"]["expected_flops"]
    assert report["cbt"]["metric"] == {"name": "miou", "label": "mIoU",
                                       "value": report["cbt"]["miou"], "unit": "image",
                                       "exit_unit": "tokens", "granularity": "token"}
    assert 0.2 < report["full"]["miou"] < 0.8


def test_runner_without_torch(bundles, tmp_path: Path) -> None:
    from tests.test_device_no_torch import BLOCK
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-c", BLOCK, str(bundles["cbt"]), "--out", str(out),
                        *COMMON], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["protocol"]["input"] == "golden"


def test_bad_inputs_are_typed_errors(bundles, camvid, tmp_path: Path) -> None:
    from device_runners.inputs import load_input as load_pixel_input
    from device_runners.manifest import load_bundle
    b = load_bundle(bundles["cbt"])
    x, y = camvid.images[:2], camvid.labels[:2]
    cases = {"wrong_size_labels": (x, y[:, :60]), "bad_label_value": (x, np.where(y == 3, 13, y)),
             "fractional_labels": (x, y.astype(np.float32) + 0.5), "label_count": (x, y[:1]),
             "wrong_size_images": (x[:, :60], y)}
    for name, (xx, yy) in cases.items():
        p = tmp_path / f"{name}.npz"
        np.savez(p, x=xx, y=yy)
        with pytest.raises(InputSpecError):
            load_pixel_input(b, p, None)
    r = _run(str(bundles["cbt"]), "--input", str(tmp_path / "bad_label_value.npz"), "--out",
             str(tmp_path / "r.json"), *COMMON)
    assert r.returncode == 2 and "13" in r.stderr and "void" in r.stderr
    ok = np.where(y == 3, 11, y)  # void is allowed
    np.savez(tmp_path / "void.npz", x=x, y=ok)
    assert load_pixel_input(b, tmp_path / "void.npz", None)[1] is not None


def test_tampered_bundle_and_golden(bundles, tmp_path: Path, monkeypatch) -> None:
    import shutil

    from device_runners.backends import open_backend
    from device_runners.golden import self_check
    from device_runners.manifest import load_bundle
    bad = tmp_path / "bad"
    shutil.copytree(bundles["cbt"], bad)
    with open(bad / "seg1.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ChecksumError):
        load_bundle(bad)
    b = load_bundle(bundles["cbt"])
    golden = b.golden()
    golden["img0/seg2/logits"] = golden["img0/seg2/logits"] + 0.1
    monkeypatch.setattr(type(b), "golden", lambda self: golden)
    with pytest.raises(SelfCheckError, match="logits"):
        self_check(b, open_backend(b))


def test_failed_validation_leaves_nothing(camvid, tmp_path: Path) -> None:
    from edge_ee.segmentation.bundle import SegBundleOptions, write_seg_bundle
    from edge_ee.segmentation.data import normalize_images
    from edge_ee.segmentation.model import load_pretrained
    x = normalize_images(camvid.images[:1])
    with pytest.raises(ExportValidationError):
        write_seg_bundle(load_pretrained(), tmp_path / "b", None, x,
                         options=SegBundleOptions(golden_count=1, min_pixel_agreement=1.01))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags", [["--alpha", "0.999", "--beta", "0.99"],
                                   ["--alpha", "0", "--beta", "0.99"],
                                   ["--alpha", "0.9", "--beta", "1.5"],
                                   ["--mode", "single", "--threshold", "1.2"],
                                   ["--mode", "full", "--int8"],
                                   ["--int8", "--int8-calib-images", "1"]])
def test_seg_build_rejects_bad_ranges(flags: list[str], tmp_path: Path, capsys) -> None:
    from edge_ee.cli import main
    assert main(["seg-build", "--out", str(tmp_path / "b"), *flags]) == 2
    assert "edge-ee: error:" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert issubclass(SegmentationError, EdgeEEError)


def test_estimated_energy_is_labelled_in_the_segmentation_report(bundles, samples,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "est.json"
    r = _run(str(bundles["cbt"]), "--input", str(samples), "--out", str(out), "--profile",
             "generic-x86_64", "--power-source", "estimated", "--idle-s", "0", "--warmup-runs", "1",
             "--min-duration-s", "2.5", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["power"]["is_estimate"] is True
    from edge_ee.cli import main
    rep = tmp_path / "rep"
    assert main(["report", str(out), "--bundle", str(bundles["cbt"]), "--names", "cbt",
                 "--out", str(rep)]) == 0
    md = (rep / "report.md").read_text()
    assert "ESTIMATED" in md and "(estimated)" in md
    assert "- power, cbt: ESTIMATED from profile 'generic-x86_64'" in md  # one short line
    assert "(estimated)" in (rep / "tables" / "overview.csv").read_text()
    html = (rep / "report.html").read_text()
    assert "ESTIMATED" in html
    for line in md.splitlines():  # the HTML shows every warning the Markdown shows
        if line.startswith("- warning: "):
            assert escape(line[len("- warning: "):]) in html


def test_token_executor_and_batch(bundles, camvid) -> None:
    """The one executor runs token exits: every token stops exactly once; no_exit keeps
    them all to the last segment; a batch of images gives each image's single-mode result."""
    from device_runners.backends import open_backend
    from device_runners.executor import execute
    from device_runners.manifest import load_bundle
    from device_runners.session import SessionConfig, measure
    from edge_ee.segmentation.data import normalize_images
    b = load_bundle(bundles["cbt"])
    be = open_backend(b)
    img = normalize_images(camvid.images[60:61])
    out = execute(b, be, img)
    h, w = b.manifest["segmentation"]["token_hw"]
    assert out.exit.shape == (1, h * w) and out.exit.min() >= 0
    assert out.active[0] == h * w and out.active == sorted(out.active, reverse=True)
    assert out.prediction.shape == (1, *b.manifest["segmentation"]["image_hw"])
    off = execute(b, be, img, no_exit=True)
    assert (off.exit == len(b.segments) - 1).all()
    assert out.exit.mean() < off.exit.mean()
    x = normalize_images(camvid.images[[0, 60, 150]])
    cfg = dict(profile="none", power_source="null", idle_s=0.0, warmup_runs=1)
    single = measure(b, be, x, None, SessionConfig(mode="single", **cfg), log=lambda m: None)
    batch = measure(b, be, x, None, SessionConfig(mode="batch", batch_size=2, **cfg),
                    log=lambda m: None)
    assert batch["samples"]["tokens_per_exit"] == single["samples"]["tokens_per_exit"]
    assert batch["samples"]["image"] == [0, 1, 2]
    assert [r["size"] for r in batch["batches"]] == [2, 1]
    assert batch["exit_maps"] == single["exit_maps"]
