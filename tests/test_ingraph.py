"""In-graph exits (ONNX `If`) beside split segments, on real Fashion-MNIST images.

A small CNN that is not in the repository (built and seeded here) gets LDA exits fitted
on real images; its bundle carries `ingraph.onnx`, validated against torch at export.
Through the real onnxruntime backend and the `edge-ee-run` CLI the in-graph strategy must
take the same exits and make the same predictions as the split, sample by sample and in
batches; the manifest covers the file with its sha256; exits-off assembly never exits.
The shipped Fashion CNN's bundle (the session fixture) carries it too.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from converters.ingraph import assemble, exits_off, write_ingraph
from device_runners.backends import open_backend
from device_runners.errors import BundleError, ChecksumError
from device_runners.executor import execute
from device_runners.manifest import load_bundle
from device_runners.strategies import INGRAPH, available, choose, execute_ingraph
from tests.helpers_models import tiny_cnn

# building the tiny bundle (training, fit, export, validation) takes ~30 s: slow
pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, "-m", "device_runners.cli"]


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, fashion) -> Path:
    """LDA exits on a small CNN trained here; the thresholds of the first two exits at the
    65th percentile of their confidence on training images, so the exits mix."""
    from edge_ee.exitnet import from_sequential
    from edge_ee.exits import ExitSpec
    from edge_ee.pipeline import FitConfig, export, fit_exits
    net = from_sequential(tiny_cnn(fashion[0]), [0, 1, 2], (1, 28, 28), "tiny-cnn")
    fitted = fit_exits(net, fashion[0], FitConfig(exit_spec=ExitSpec.parse("lda:2")),
                       progress=False)
    f = torch.from_numpy(fashion[0].normalised()[:1000])
    with torch.no_grad():
        for i, head in enumerate(fitted.heads):
            f = net.stages[i](f)
            conf = head(f)[1].numpy()
            head.set_threshold(float(np.quantile(conf, 0.65)) if i < 2 else math.inf)
    out = tmp_path_factory.mktemp("ingraph") / "tiny"
    return export(net, fitted.heads, out, fashion[1], "tiny-cnn", {"point": fitted.chosen.to_json()})


def _same_as_split(bundle: Path, x: np.ndarray) -> np.ndarray:
    b = load_bundle(bundle)
    be = open_backend(b, "onnxruntime")
    assert available(b, be) == ["split", INGRAPH]
    single = [(execute(b, be, x[n : n + 1]), execute_ingraph(b, be, x[n : n + 1]))
              for n in range(len(x))]
    for s, g in single:
        assert g.exit.tolist() == s.exit.tolist()
        assert g.prediction.tolist() == s.prediction.tolist()
        np.testing.assert_allclose(g.confidence, s.confidence, atol=1e-5)
        assert len(g.segment_latency_ns) == 1 and g.segment_latency_ns[0] > 0
    split, ingraph = execute(b, be, x), execute_ingraph(b, be, x)  # a batch: rows mix exits
    assert ingraph.exit.tolist() == split.exit.tolist()
    assert ingraph.prediction.tolist() == split.prediction.tolist()
    return split.exit


def test_tiny_model_ingraph_equals_split(tiny_bundle: Path, fashion) -> None:
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    entry = m["strategies"][INGRAPH]
    assert entry["files"] == {"onnx": "ingraph.onnx"} and "ingraph.onnx" in m["files"]
    val = entry["validation"]["torch"]
    assert val["passed"] and val["samples"] == 64 and val["exit_agreement"] == 1.0
    assert m["self_check"]["ingraph"]["passed"]
    x = fashion[1].subset(np.arange(0, 500, 5)).normalised()  # 100 images, all classes
    exits = _same_as_split(tiny_bundle, x)
    assert len(set(exits.tolist())) > 1  # exits really fire, and not everywhere
    # one If per exit, nested: the graph has control flow, not a flat copy
    g = onnx.load(str(tiny_bundle / "ingraph.onnx")).graph
    assert [n.op_type for n in g.node].count("If") == 1


def test_exits_off_assembly_never_exits(tiny_bundle: Path, fashion) -> None:
    b = load_bundle(tiny_bundle)
    segs = [tiny_bundle / s["files"]["onnx"] for s in b.segments]
    off = write_ingraph(segs, tiny_bundle.parent / "off.onnx", thresholds=exits_off(len(segs)))
    from device_runners.backends import ort_session
    sess = ort_session(off)
    x = fashion[1].subset(np.arange(0, 500, 10)).normalised()
    pred, _conf, ex = sess.run(None, {"x": x})
    full = execute(b, open_backend(b), x, no_exit=True)
    assert (ex == len(segs) - 1).all() and pred.tolist() == full.prediction.tolist()
    outer = assemble([onnx.load(str(p)) for p in segs], weights="outer")
    assert len(outer.graph.initializer) == sum(len(onnx.load(str(p)).graph.initializer)
                                               for p in segs)


def _run(bundle: Path, samples: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*RUN, str(bundle), "--input", str(samples), "--out", str(out),
                           "--profile", "none", "--power-source", "null", "--idle-s", "0",
                           "--quiet", *flags], capture_output=True, text=True, env=env,
                          check=False)


def test_runner_cli_strategies(tiny_bundle: Path, fashion_samples: Path, tmp_path: Path) -> None:
    res = {}
    for strategy in ("split", "ingraph", "auto"):
        out = tmp_path / f"{strategy}.json"
        p = _run(tiny_bundle, fashion_samples, out, "--strategy", strategy)
        assert p.returncode == 0, p.stderr
        res[strategy] = json.loads(out.read_text())
    for k in ("exit", "prediction"):
        assert res["ingraph"]["samples"][k] == res["split"]["samples"][k]
    assert res["ingraph"]["strategy"]["name"] == INGRAPH
    assert res["ingraph"]["self_check"]["ingraph"]["passed"]
    assert res["split"]["strategy"]["reason"] == "requested with --strategy"
    auto = res["auto"]["strategy"]
    med = auto["measured_median_ns"]
    assert auto["name"] == min(med, key=med.get) and all(v > 0 for v in med.values())
    assert all(len(r) == 1 for r in res["ingraph"]["samples"]["segment_latency_ns"])
    from device_runners.results import load_results
    from edge_ee.report import summarize
    summary = summarize(load_results(tmp_path / "ingraph.json"), load_bundle(tiny_bundle))
    assert summary["strategy"]["name"] == INGRAPH and summary["latency_ns"]["p50"] > 0
    assert "segment_latency_ns" not in summary  # one call per sample: no per-segment times
    assert summary["accuracy"] == summarize(load_results(tmp_path / "split.json"),
                                            load_bundle(tiny_bundle))["accuracy"]
    p = _run(tiny_bundle, fashion_samples, tmp_path / "bad.json", "--strategy", "ingraph",
             "--no-exit")
    assert p.returncode == 2 and "--no-exit" in p.stderr
    p = _run(tiny_bundle, fashion_samples, tmp_path / "off.json", "--no-exit")
    assert p.returncode == 0
    assert json.loads((tmp_path / "off.json").read_text())["strategy"]["name"] == "split"


def test_ingraph_file_is_checksummed(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    with open(copy / "ingraph.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ChecksumError):
        load_bundle(copy)
    m = json.loads((copy / "manifest.json").read_text())
    del m["files"]["ingraph.onnx"]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"strategies\.ingraph\.files\.onnx"):
        load_bundle(copy)


def test_choose_refuses_what_the_bundle_lacks(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    m = json.loads((copy / "manifest.json").read_text())
    del m["strategies"][INGRAPH]["files"]
    del m["files"]["ingraph.onnx"]
    (copy / "ingraph.onnx").unlink()
    (copy / "manifest.json").write_text(json.dumps(m))
    b = load_bundle(copy)
    be = open_backend(b)
    x = np.zeros((2, 1, 28, 28), np.float32)
    with pytest.raises(BundleError, match="no in-graph exits"):
        choose(b, be, x, INGRAPH)
    name, why = choose(b, be, x, "auto")
    assert name == "split" and "no in-graph" in why["reason"]


def test_shipped_fashion_bundle_carries_ingraph(fashion_bundle: Path, fashion) -> None:
    m = json.loads((fashion_bundle / "manifest.json").read_text())
    assert m["strategies"][INGRAPH]["validation"]["torch"]["passed"]
    assert not math.isnan(m["strategies"][INGRAPH]["validation"]["split"]["exit_equal"])
    _same_as_split(fashion_bundle, fashion[1].subset(np.arange(0, 500, 5)).normalised())
