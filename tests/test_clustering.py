"""Early exit for clustering: real Fashion-MNIST, shipped autoencoder, bundle, device runner."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_ee.clustering.autoencoder import asset_path, load_encoder
from edge_ee.clustering.config import ClusterConfig
from edge_ee.clustering.encoders import Encoder, load_encoder_source
from edge_ee.clustering.errors import ClusterCollapseError
from edge_ee.clustering.fit import (
    check_collapse,
    cluster,
    evaluate_clustering,
    fit_clustering,
    kmeans,
)
from edge_ee.clustering.metrics import clustering_accuracy, nmi, score_run
from edge_ee.errors import ConfigError, EdgeEEError, ModelError
from edge_ee.pipeline import FitConfig, export

BIN = Path(sys.executable).parent
FIT = FitConfig(max_drop=0.01)


def _encoder(fashion, enc_model=None) -> Encoder:
    model, digest = load_encoder() if enc_model is None else (enc_model, "x")
    ch = list(model.children())
    return Encoder("fashion-ae", ch[:-1], ch[-1], [f"block{i + 1}" for i in range(5)],
                   (1, 28, 28), fashion[0], fashion[1], digest, "reconstruction only")


@pytest.fixture(scope="module")
def fitted(fashion):
    enc = _encoder(fashion)
    cfg = ClusterConfig(out="unused", clusters=10, kmeans_inits=3, fit=FIT)
    cf = fit_clustering(enc, cfg, progress=False)
    return enc, cfg, cf, evaluate_clustering(cf, fashion[1], progress=False)


def test_metrics_hungarian_and_nmi() -> None:
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    assert clustering_accuracy(y, (y + 1) % 3) == 1.0  # a relabelling is a perfect clustering
    assert nmi(y, (y + 1) % 3) == pytest.approx(1.0)
    assert clustering_accuracy(y, np.array([0, 0, 0, 1, 1, 1, 1])) == pytest.approx(5 / 7)
    assert nmi(y, np.zeros(7, int)) == pytest.approx(0.0)
    with pytest.raises(EdgeEEError, match="labels but"):
        clustering_accuracy(y, y[:3])


@pytest.mark.shared_data
def test_clusters_and_exits_without_labels(fashion, fitted) -> None:
    enc, cfg, cf, ev = fitted
    # k-means found 10 non-trivial clusters; the final head is the nearest centroid
    assert cf.k == 10 and cf.sizes.min() > 0.02 * cf.fit_samples
    full = ev.point(np.full(cf.net.num_exits, np.inf))
    assert full["agreement"] == 1.0
    assert full["clustering_accuracy"] > 0.45 and full["nmi"] > 0.45  # AE + k-means level
    # exits: cheaper, agree with the final assignment, lose ≤ about a point of accuracy
    got = ev.point(cf.fitted.chosen.thresholds)
    assert got["cost_fraction"] < 0.8 and got["agreement"] > 0.97
    assert got["clustering_accuracy"] >= full["clustering_accuracy"] - 0.03
    # the fitting split had its labels removed: permuting the true labels changes nothing
    shuffled = replace(enc, train=replace(enc.train, labels=np.random.default_rng(1)
                                          .permutation(enc.train.labels)))
    c2 = cluster(shuffled, cfg, progress=False)
    assert np.array_equal(c2.pseudo.labels, cf.pseudo.labels)
    assert np.allclose(c2.centroids, cf.centroids)


@pytest.mark.shared_data
def test_labels_are_said_to_be_ignored(fashion, caplog) -> None:
    enc = _encoder((fashion[0].subset(np.arange(300)), fashion[1]))
    with caplog.at_level(logging.WARNING):
        c = cluster(enc, ClusterConfig(out="x", clusters=3, kmeans_inits=1), progress=False)
    assert "labels are ignored" in caplog.text
    assert (c.pseudo.labels >= 0).all() and c.pseudo.classes == ("cluster 0", "cluster 1",
                                                                 "cluster 2")


@pytest.mark.shared_data
def test_bundle_runs_on_the_device_runner(tmp_path: Path, fashion, fitted) -> None:
    enc, _, cf, ev = fitted
    test = fashion[1].subset(np.arange(200))
    as_clusters = replace(test, labels=ev.assignments[:200].astype(np.int64),
                          classes=tuple(f"cluster {i}" for i in range(10)))
    b = export(cf.net, cf.fitted.heads, tmp_path / "bundle", as_clusters, "fashion-ae-k10",
               {"point": cf.fitted.chosen.to_json()}, enc.source_sha256, task="clustering",
               validation_samples=32)
    np.savez(tmp_path / "x.npz", x=test.images)
    exe = BIN / "edge-ee-run"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "device_runners.cli"]
    r = subprocess.run([*cmd, str(b), "--input", str(tmp_path / "x.npz"), "--out",
                        str(tmp_path / "r.json"), "--idle-s", "0", "--warmup-runs", "2",
                        "--quiet"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    got = score_run(tmp_path / "r.json", b, test.labels)
    want = ev.point(cf.fitted.chosen.thresholds)
    exits = ev.table.assign(np.asarray(cf.fitted.chosen.thresholds))[:200]
    pred = ev.table.pred[exits, np.arange(200)]
    dev = json.loads((tmp_path / "r.json").read_text())["samples"]["prediction"]
    assert np.mean(np.asarray(dev) == pred) >= 0.99  # the device decides as torch does
    assert got["samples"] == 200 and got["cost_fraction"] < 0.85
    assert got["clustering_accuracy"] == pytest.approx(clustering_accuracy(test.labels, pred),
                                                       abs=0.011)
    assert abs(got["clustering_accuracy"] - want["clustering_accuracy"]) < 0.1


def test_bad_cluster_counts() -> None:
    with pytest.raises(ConfigError, match="≥ 2"):
        ClusterConfig(out="x", clusters=1)
    with pytest.raises(ConfigError, match="fewer than --clusters"):
        ClusterConfig(out="x", clusters=10, fit_samples=5)
    with pytest.raises(ConfigError, match="cannot make 10 clusters"):
        kmeans(np.random.default_rng(0).normal(size=(6, 4)), 10)


def test_collapsed_embeddings_are_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ClusterCollapseError, match=r"collapsed.*distinct"):
        kmeans(np.ones((500, 10)), 10)
    nearly = np.vstack([np.zeros((950, 4)), rng.normal(size=(50, 4))])  # 95 % in one place
    with pytest.raises(ClusterCollapseError, match=r"holds 9[0-9].*max-cluster-share"):
        kmeans(nearly, 4, max_share=0.9)
    with pytest.raises(ClusterCollapseError, match="empty"):
        check_collapse(np.array([0, 0, 1, 1]), 3, 0.9, "test")


@pytest.mark.shared_data
def test_dead_encoder_collapses_with_a_clear_error(fashion) -> None:
    model, _ = load_encoder()
    with torch.no_grad():
        model[-1][1].weight.zero_()  # every image maps to the bias: one point
    enc = _encoder((fashion[0].subset(np.arange(400)), fashion[1]), model)
    with pytest.raises(ClusterCollapseError, match="retrain"):
        cluster(enc, ClusterConfig(out="x", clusters=10, kmeans_inits=1), progress=False)


def test_tampered_encoder_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "enc.pt"
    p.write_bytes(asset_path().read_bytes())
    (tmp_path / "enc.pt.sha256").write_text("0" * 64 + "\n")
    with pytest.raises(ModelError, match="sha256"):
        load_encoder(p)
    (tmp_path / "enc.pt.sha256").unlink()
    with pytest.raises(ModelError, match="cannot be verified"):
        load_encoder(p)


def test_unknown_encoder() -> None:
    with pytest.raises(ConfigError, match="unknown encoder 'nope'; choose from"):
        load_encoder_source("nope")


@pytest.mark.parametrize("args, message", [
    (["--clusters", "1"], "--clusters must be ≥ 2"),
    (["--clusters", "10", "--fit-samples", "4"], "fewer than --clusters"),
])
def test_cli_bad_input_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    exe = BIN / "edge-ee"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "edge_ee.cli"]
    r = subprocess.run([*cmd, "cluster", "--out", str(tmp_path / "o"), *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr and "Traceback" not in r.stderr


def test_distance_confidence_is_minus_the_nearest_normalised_distance() -> None:
    from edge_ee.exits import ExitSpec
    from edge_ee.exits.heads import ClassMeanScorer, ExitHead, FeatureTransform
    spec = ExitSpec.parse("e2cm::distance")
    assert spec.pool is None and spec.confidence == "distance"
    scorer = ClassMeanScorer(torch.tensor([[0.0, 0.0], [4.0, 0.0]]), 1 / torch.tensor([0.5, 1.0]))
    head = ExitHead(FeatureTransform(None), scorer, "distance", threshold=-1.5)
    pred, conf, flag = head(torch.tensor([[1.0, 0.0], [3.5, 0.0], [2.0, 2.0]]))
    # normalised distances: [2, 3], [7, 0.5], [2√2·2, 2√2]
    assert pred.tolist() == [0, 1, 1]
    assert torch.allclose(conf, torch.tensor([-2.0, -0.5, -2 * 2 ** 0.5]), atol=1e-5)
    assert flag.tolist() == [False, True, False]
