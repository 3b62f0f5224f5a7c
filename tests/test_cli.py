"""The two command lines as real subprocesses: the quick-start demo and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers_cli import run_cli

pytestmark = pytest.mark.shared_data


_cli = run_cli


@pytest.mark.slow
def test_quick_start_demo_end_to_end(tmp_path: Path, data_dir: Path) -> None:
    """The README's main job: fashion-resnet, host-measured boundary costs charged, both
    bundles run, the report ends with what was saved (speed itself: benchmarks/bench_demo.py)."""
    r = _cli("edge-ee", "demo", "--data", str(data_dir / "fashion-mnist"), "--out",
             str(tmp_path / "demo"), "--samples", "300", "--fit-samples", "3000")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[6/6] report" in r.stderr and "| accuracy |" in r.stdout
    assert "What early exit saved" in r.stdout and "latency p50:" in r.stdout
    rep = json.loads((tmp_path / "demo" / "report.json").read_text())
    ee, full = rep["early-exit"], rep["full"]
    # --min-duration-s repeats whole passes over the 300 class-balanced images
    assert ee["samples"] % 300 == 0 and full["samples"] % 300 == 0 and ee["samples"] > 0
    assert ee["cost_fraction"] < 1.0 and full["cost_fraction"] == pytest.approx(1.0)
    assert ee["accuracy"] >= full["accuracy"] - 0.03
    man = json.loads((tmp_path / "demo" / "bundle" / "manifest.json").read_text())
    assert man["model"]["name"] == "fashion-resnet-lda-pool2-max_softmax"
    over = man["calibration"]["exit_overhead"]
    assert over["source"] == "host" and len(over["fraction"]) == 4
    # the default worst-case bound of a latency-aware build holds for the kept exits
    bound = man["calibration"]["overhead_bound"]
    # (auto: 0.05, raised to the cheapest exit's own charge, at most 0.10, when none fits)
    assert bound["requested"] == "auto" and 0.05 <= bound["max_overhead"] <= 0.10 + 1e-9
    assert bound["charged"] <= bound["max_overhead"] + 1e-9 and bound["kept_exits"]
    y = np.load(tmp_path / "demo" / "test_samples.npz")["y"]
    assert np.bincount(y, minlength=10).tolist() == [30] * 10  # class-balanced, not the first 300
    # the runner ran in its own process: its peak RSS is its own, not the torch host's
    res = json.loads((tmp_path / "demo" / "results-early-exit.json").read_text())
    assert res["peak_rss_process"]["torch_loaded"] is False
    assert res["peak_rss_process"]["source"] == "VmHWM"
    # ru_maxrss would carry the torch parent's ~680 MiB over fork + exec; VmHWM does not
    assert res["peak_rss_kib"] < 400 * 1024, res["peak_rss_kib"]
    assert ee["peak_rss_torch_loaded"] is False and "peak RSS of the runner process" in r.stdout
    assert "includes torch" not in r.stdout


def test_runner_cli_results_and_report(tmp_path: Path, fashion_bundle: Path,
                                       fashion_samples: Path) -> None:
    out = tmp_path / "r.json"
    r = _cli("edge-ee-run", str(fashion_bundle), "--input", str(fashion_samples), "--out",
             str(out), "--mode", "batch", "--batch-size", "16")
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["complete"] and len(res["samples"]["exit"]) == 200
    assert res["self_check"]["passed"] and res["protocol"]["mode"] == "batch"
    rep = _cli("edge-ee", "report", str(out), "--bundle", str(fashion_bundle), "--out",
               str(tmp_path / "rep"))
    assert rep.returncode == 0, rep.stderr
    assert "accuracy" in (tmp_path / "rep" / "report.md").read_text()


def test_runner_cli_bad_inputs_exit_2(tmp_path: Path, fashion_bundle: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(fashion_bundle, copy)
    (copy / "golden.npz").write_bytes(b"changed")
    r = _cli("edge-ee-run", str(copy), "--out", str(tmp_path / "x.json"))
    assert r.returncode == 2 and "sha256" in r.stderr and "re-copy" in r.stderr
    assert not (tmp_path / "x.json").exists()
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 32, 32, 3), np.uint8))
    r = _cli("edge-ee-run", str(fashion_bundle), "--input", str(bad), "--out",
             str(tmp_path / "y.json"))
    assert r.returncode == 2 and "expects float32" in r.stderr
    r = _cli("edge-ee-run", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "not a bundle" in r.stderr


def test_host_cli_bad_inputs_exit_2(tmp_path: Path, fashion_bundle: Path) -> None:
    r = _cli("edge-ee", "build", "--model", str(tmp_path / "missing.npz"), "--out",
             str(tmp_path / "o"))
    assert r.returncode == 2 and "not found" in r.stderr
    r = _cli("edge-ee", "build", "--model", "fashion-cnn", "--exits", "0,9", "--out",
             str(tmp_path / "o"))
    assert r.returncode == 2 and "do not exist" in r.stderr
    assert not (tmp_path / "o").exists()
    other = tmp_path / "r.json"
    other.write_text(json.dumps({"schema_version": 1, "kind": "edge-ee-results", "bundle": {
        "manifest_sha256": "0" * 64, "model": "m"}, "backend": {"name": "onnxruntime"},
        "protocol": {"mode": "single"},
        "samples": {}, "complete": True}))
    r = _cli("edge-ee", "report", str(other), "--bundle", str(fashion_bundle))
    assert r.returncode == 2 and "pass the bundle that was run" in r.stderr
