"""Fit early exits for clustering: k-means on the final embedding, exits under pseudo-labels.

1. One pass embeds the fitting samples; scikit-learn's `KMeans` clusters the embedding.
   A collapsed embedding (empty clusters, or one cluster holding more than
   `max_cluster_share` of the samples) is a `ClusterCollapseError`, never a bundle.
2. The encoder becomes an `ExitNet` whose final "classifier" is the embedding followed by
   nearest-centroid scoring (`ClassMeanScorer` with the centroids: logits = −distance),
   so it exports as the ordinary `FinalHead`.
3. Each fitting sample's final cluster assignment is its pseudo-label: the training split
   with the assignments as labels goes through the supervised core unchanged
   (`pipeline.fit_exits`: class means per exit = cluster means, normaliser, thresholds on
   a held-out part), so "accuracy" there is agreement with the final assignment.
   True labels are never read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn

from edge_ee.calibrate import ExitTable
from edge_ee.clustering.config import ClusterConfig
from edge_ee.clustering.encoders import Encoder
from edge_ee.clustering.errors import ClusterCollapseError
from edge_ee.clustering.metrics import score
from edge_ee.cost import CostTable
from edge_ee.data import ImageSplit
from edge_ee.errors import ConfigError
from edge_ee.exitnet import ExitNet
from edge_ee.exits.fit import ExitScores, batches, score_split
from edge_ee.exits.heads import ClassMeanScorer, ExitHead
from edge_ee.pipeline import FittedExits, fit_exits, table_for

log = logging.getLogger(__name__)


def cluster_names(k: int) -> tuple[str, ...]:
    return tuple(f"cluster {i}" for i in range(k))


def has_labels(data: ImageSplit) -> bool:
    """Whether the split carries real labels (unlabelled data uses −1 everywhere)."""
    return bool(data.labels.size and (data.labels >= 0).any())


@torch.no_grad()
def embed(stages: list[nn.Module], head: nn.Module, data: ImageSplit, batch_size: int = 256,
          progress: bool = True) -> np.ndarray:
    """The final embedding (N, D) float64 of every sample, one streamed pass."""
    for m in (*stages, head):
        m.eval()
    out = []
    for x, _ in batches(data, batch_size, "embedding", progress):
        for s in stages:
            x = s(x)
        out.append(head(x).double().numpy())
    return np.concatenate(out)


def check_collapse(assign: np.ndarray, k: int, max_share: float, where: str) -> np.ndarray:
    """Cluster sizes; raises `ClusterCollapseError` if clusters are empty or one dominates."""
    sizes = np.bincount(assign, minlength=k)
    empty = np.flatnonzero(sizes == 0).tolist()
    share = sizes.max() / max(sizes.sum(), 1)
    if empty or share > max_share:
        why = (f"{len(empty)} of {k} clusters are empty" if empty else
               f"cluster {int(sizes.argmax())} holds {share:.1%} of the samples "
               f"(more than --max-cluster-share {max_share:.0%})")
        raise ClusterCollapseError(
            f"the embedding collapsed in {where}: {why}; sizes {sizes.tolist()}. The encoder "
            "does not separate these samples: retrain it (--train-epochs), check the data's "
            "normalisation, or ask for fewer clusters")
    return sizes


def kmeans(emb: np.ndarray, k: int, seed: int = 0, n_init: int = 10,
           max_share: float = 0.9) -> tuple[np.ndarray, np.ndarray, float]:
    """k-means centroids (K, D), cluster sizes and inertia; collapse is an error."""
    if k < 2:
        raise ConfigError(f"need at least 2 clusters, got {k}")
    if len(emb) < k:
        raise ConfigError(f"{len(emb)} samples cannot make {k} clusters; lower --clusters or "
                          "pass more samples")
    if not np.isfinite(emb).all():
        raise ClusterCollapseError("the embedding has NaN or infinite values; the encoder "
                                   "weights are broken — retrain or restore them")
    distinct = len(np.unique(emb.round(6), axis=0))
    if distinct < k:
        raise ClusterCollapseError(
            f"the embedding collapsed: only {distinct} distinct point(s) for {k} clusters; "
            "the encoder maps (nearly) every sample to the same place — retrain it "
            "(--train-epochs) or check the data")
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(emb)
    sizes = check_collapse(km.labels_, k, max_share, "k-means")
    return km.cluster_centers_, sizes, float(km.inertia_)


def clustering_net(enc: Encoder, centroids: np.ndarray, name: str | None = None) -> ExitNet:
    """Encoder stages + (embedding → −distance to each centroid) as the final classifier."""
    scorer = ClassMeanScorer(torch.as_tensor(centroids, dtype=torch.float64))
    return ExitNet(enc.stages, nn.Sequential(enc.embed, scorer).eval(), enc.exit_names,
                   enc.input_shape, name or f"{enc.name}-k{len(centroids)}").eval()


@dataclass
class Clustered:
    """k-means on the final embedding, the clustering ExitNet and the pseudo-labelled split."""

    net: ExitNet
    pseudo: ImageSplit  # the fitting samples, labels = final cluster assignments
    centroids: np.ndarray
    sizes: np.ndarray
    inertia: float

    @property
    def k(self) -> int:
        return len(self.centroids)


@dataclass
class ClusterFit(Clustered):
    """Plus the fitted, calibrated exits."""

    fitted: FittedExits | None = None
    seconds: float = 0.0

    @property
    def fit_samples(self) -> int:
        return len(self.pseudo)


def fitting_split(train: ImageSplit, cfg: ClusterConfig) -> ImageSplit:
    """The (seeded random) samples k-means and the exits are fitted on; labels dropped."""
    if has_labels(train):
        log.warning("the training data's labels are ignored: clustering, exit statistics and "
                    "thresholds use only the final cluster assignments")
    n = len(train)
    if cfg.fit_samples is not None and cfg.fit_samples < n:
        idx = np.sort(np.random.default_rng(cfg.fit.seed).choice(n, cfg.fit_samples, False))
        train = train.subset(idx)
    return replace(train, labels=np.full(len(train), -1, np.int64))


def cluster(enc: Encoder, cfg: ClusterConfig, progress: bool = True) -> Clustered:
    """Embed the fitting samples, k-means them, and label each with its final assignment."""
    data = fitting_split(enc.train, cfg)
    if len(data) < cfg.clusters:
        raise ConfigError(f"{len(data)} samples cannot make {cfg.clusters} clusters; lower "
                          "--clusters or pass more samples")
    emb = embed(enc.stages, enc.embed, data, cfg.fit.batch_size, progress)
    centroids, sizes, inertia = kmeans(emb, cfg.clusters, cfg.fit.seed, cfg.kmeans_inits,
                                       cfg.max_cluster_share)
    net = clustering_net(enc, centroids, cfg.name)
    with torch.no_grad():  # the network's own nearest-centroid rule, as exported
        assign = net.classifier[1](torch.from_numpy(emb).float()).argmax(1).numpy()
    check_collapse(assign, cfg.clusters, cfg.max_cluster_share, "the final assignments")
    pseudo = replace(data, labels=assign.astype(np.int64), classes=cluster_names(cfg.clusters))
    return Clustered(net, pseudo, centroids, sizes, inertia)


def fit_clustering(enc: Encoder, cfg: ClusterConfig, progress: bool = True) -> ClusterFit:
    """k-means on the final embedding, then E2CM-style exits fitted on the pseudo-labels."""
    t0 = time.perf_counter()
    c = cluster(enc, cfg, progress)
    fitted = fit_exits(c.net, c.pseudo, cfg.fit, progress)
    secs = time.perf_counter() - t0
    log.info("clustering fitted on %d samples in %.1f s; sizes %s", len(c.pseudo), secs,
             c.sizes.tolist())
    return ClusterFit(c.net, c.pseudo, c.centroids, c.sizes, c.inertia, fitted, secs)


@dataclass
class ClusterEval:
    """One split through the fitted exits: agreement table, and true labels if any."""

    table: ExitTable  # labels = the final cluster assignments (agreement)
    labels: np.ndarray | None
    assignments: np.ndarray

    def point(self, thresholds: tuple[float, ...] | np.ndarray) -> dict:
        """Cost, agreement and (with labels) clustering accuracy and NMI at one threshold vector."""
        thr = np.asarray(thresholds, np.float64)
        op = self.table.evaluate(thr)
        exits = self.table.assign(thr)
        pred = self.table.pred[exits, np.arange(self.table.n)]
        out = {"cost_fraction": op.cost_fraction, "agreement": op.accuracy,
               "exit_fractions": list(op.exit_fractions)}
        if self.labels is not None:
            out.update(score(self.labels, pred))
        return out


def cluster_eval(heads: list[ExitHead | None], scores: ExitScores, costs: CostTable,
                 data: ImageSplit) -> ClusterEval:
    """An agreement table from one split's exit scores; the split's labels kept only to score."""
    assign = scores.final_logits.argmax(1)
    table = table_for(heads, ExitScores(scores.raw, scores.final_logits, assign), costs)
    return ClusterEval(table, data.labels.copy() if has_labels(data) else None, assign.numpy())


def evaluate_clustering(cf: ClusterFit, data: ImageSplit, batch_size: int = 256,
                        progress: bool = True) -> ClusterEval:
    """Score every exit on a split; labels (if the split has them) are kept only to score."""
    (sc,) = score_split(cf.net, [cf.fitted.heads], data, batch_size, progress, "test scores")
    return cluster_eval(cf.fitted.heads, sc, cf.fitted.costs, data)
