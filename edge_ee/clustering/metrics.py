"""Scoring a clustering against true labels (used only to score, never to fit).

* clustering accuracy: the best one-to-one map of clusters to classes (Hungarian
  matching, `scipy.optimize.linear_sum_assignment`) and the share of samples it gets right;
* NMI: `sklearn.metrics.normalized_mutual_info_score`.
`score_run` scores a device runner's results.json the same way, with its expected cost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score

from edge_ee.errors import DataError


def _check(labels: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(labels, np.int64), np.asarray(pred, np.int64)
    if y.shape != p.shape or y.ndim != 1:
        raise DataError(f"{y.shape} labels but {p.shape} predictions; score one label per sample")
    if y.size == 0:
        raise DataError("no samples to score")
    if y.min() < 0 or p.min() < 0:
        raise DataError("labels and cluster ids must be ≥ 0 to be scored")
    return y, p


def clustering_accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    """Share of samples right under the best one-to-one cluster→class map (Hungarian)."""
    y, p = _check(labels, pred)
    size = int(max(y.max(), p.max())) + 1
    counts = np.zeros((size, size), np.int64)
    np.add.at(counts, (p, y), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / y.size)


def nmi(labels: np.ndarray, pred: np.ndarray) -> float:
    """Normalised mutual information (arithmetic mean normalisation, scikit-learn's default)."""
    y, p = _check(labels, pred)
    return float(normalized_mutual_info_score(y, p))


def score(labels: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"clustering_accuracy": clustering_accuracy(labels, pred), "nmi": nmi(labels, pred)}


def score_run(results: str | Path, bundle: str | Path, labels: np.ndarray) -> dict:
    """Clustering accuracy, NMI, expected cost and exit histogram of one `edge-ee-run` result."""
    from device_runners.manifest import load_bundle
    from device_runners.results import load_results
    from edge_ee.report import summarize
    res = load_results(results)
    summary = summarize(res, load_bundle(bundle))
    pred = np.asarray(res["samples"]["prediction"], np.int64)
    if len(pred) > len(labels):
        raise DataError(f"{len(pred)} predictions but only {len(labels)} labels to score them")
    out = score(np.asarray(labels)[: len(pred)], pred)
    out.update(samples=len(pred), cost_fraction=summary["cost_fraction"],
               exit_histogram=summary["exit_histogram"],
               latency_ns_p50=(summary.get("latency_ns") or {}).get("p50"))
    return out
