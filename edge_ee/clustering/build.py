"""`edge-ee cluster` end to end: encoder → k-means → exits → bundle → runner → scores.

Writes into `cfg.out`:
  bundle/        the exit-split bundle (task "clustering", classes `cluster 0..K-1`),
                 validated against torch by `pipeline.export`
  summary.json   k-means, the chosen operating point, the test curve (cost, agreement,
                 clustering accuracy, NMI) and, with `runner_samples`, the device scores
  samples.npz, results.json   the runner's inputs (images only) and raw results
True labels are read only to score the test split (and to draw a class-balanced sample
for the runner); they never reach k-means, exit statistics or thresholds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from device_runners import cli as run_cli
from device_runners.results import atomic_write_json
from edge_ee.clustering.config import ClusterConfig
from edge_ee.clustering.encoders import Encoder, load_encoder_source
from edge_ee.clustering.fit import (
    ClusterEval,
    ClusterFit,
    cluster_names,
    evaluate_clustering,
    fit_clustering,
    has_labels,
)
from edge_ee.clustering.metrics import score_run
from edge_ee.data import ImageSplit, atomic_save_npz
from edge_ee.errors import EdgeEEError
from edge_ee.pipeline import calibration_record, export

log = logging.getLogger(__name__)


def balanced_sample(data: ImageSplit, n: int, seed: int = 0) -> np.ndarray:
    """Indices of n samples, class-balanced when the split has labels, else random (seeded)."""
    rng = np.random.default_rng(seed)
    if n >= len(data):
        return np.arange(len(data))
    if not has_labels(data):
        return np.sort(rng.choice(len(data), n, replace=False))
    classes = np.unique(data.labels)
    per = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
    idx = [rng.permutation(np.flatnonzero(data.labels == c))[:m] for c, m in
           zip(classes, per, strict=True)]
    return np.sort(np.concatenate(idx))


def clustering_record(cf: ClusterFit, ev: ClusterEval, enc: Encoder, cfg: ClusterConfig,
                      max_points: int = 60) -> dict:
    """The manifest's calibration record plus what clustering adds (k-means, test scores)."""
    rec = calibration_record(cf.fitted, cfg.fit, ev.table, max_points)
    path = cf.fitted.path
    step = max(1, len(path) // max_points)
    pts = path[::step] + ([path[-1]] if (len(path) - 1) % step else [])
    rec["accuracy_means"] = "agreement with the final cluster assignment (no labels used)"
    rec["clustering"] = {
        "clusters": cf.k, "encoder": enc.name, "features_trained_with": enc.features_trained_with,
        "fit_samples": cf.fit_samples, "kmeans_inertia": cf.inertia,
        "cluster_sizes": cf.sizes.tolist(), "labels_used_for_fitting": "none",
        "test_labels": "used only to score" if ev.labels is not None else "none",
        "test_full": ev.point(np.full(cf.net.num_exits, np.inf)),
        "test_chosen": ev.point(cf.fitted.chosen.thresholds),
        "test_curve": [ev.point(p.thresholds) for p in pts],
    }
    return rec


def run_on_device(bundle: Path, data: ImageSplit, n: int, out: Path, threads: int = 1,
                  seed: int = 0) -> dict | None:
    """`edge-ee-run` on n (class-balanced) images of `data`, scored on the host."""
    idx = balanced_sample(data, n, seed)
    atomic_save_npz(out / "samples.npz", x=data.images[idx])  # images only: no labels travel
    code = run_cli.main([str(bundle), "--input", str(out / "samples.npz"), "--out",
                         str(out / "results.json"), "--threads", str(threads), "--idle-s", "0",
                         "--quiet"])
    if code != 0:
        raise EdgeEEError(f"edge-ee-run exited with {code} on {bundle}; see its message above")
    if not has_labels(data):
        return None
    return score_run(out / "results.json", bundle, data.labels[idx])


def build_cluster_bundle(cfg: ClusterConfig, progress: bool = True) -> dict:
    """The whole flow; returns the summary that is also written to `out/summary.json`."""
    out = Path(cfg.out)
    enc = load_encoder_source(cfg.encoder, cfg.data, cfg.weights, cfg.train_epochs)
    cf = fit_clustering(enc, cfg, progress)
    ev = evaluate_clustering(cf, enc.test, cfg.fit.batch_size, progress)
    rec = clustering_record(cf, ev, enc, cfg)
    names = cluster_names(cf.k)
    as_clusters = replace(enc.test, labels=ev.assignments.astype(np.int64), classes=names)
    bundle = export(cf.net, cf.fitted.heads, out / "bundle", as_clusters,
                    f"{cf.net.name}-{cfg.fit.exit_spec.label}", rec, enc.source_sha256,
                    overwrite=cfg.overwrite, task="clustering")
    summary = {"bundle": str(bundle), "config": _jsonable(asdict(cfg)),
               "clustering": rec["clustering"], "calibration_point": rec["point"],
               "calibration_full_agreement": rec["full_accuracy"]["calibration"],
               "fit_seconds": cf.seconds}
    if cfg.runner_samples:
        summary["device"] = run_on_device(bundle, enc.test, cfg.runner_samples, out,
                                          cfg.threads, cfg.fit.seed)
    atomic_write_json(out / "summary.json", summary)
    return summary


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: None if o is None else str(o)))
