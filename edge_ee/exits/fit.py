"""Fitting training-free exits: one statistics pass, one scoring pass, finalisation.

1. `fit_statistics`: one forward pass over the training data; per exit, class sums,
   counts, squared norms (and the scatter for shared-covariance exits), in float64.
2. `build_heads`: means (E2CM) or Σ⁻¹μ and the bias (LDA) from the statistics.
3. `score_split`: one pass over a split storing each exit's raw scores (N, K).
4. `finalize_heads`: the normaliser ν from the calibration distances (E2CM `mean`) or in
   closed form (`rms`), and the temperature T where asked.

Several exit configurations ("variants") share a pass, so comparing raw, pooled and
shared-covariance exits costs one backbone forward pass, not one each.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from converters.progress import progress as progress_bar
from edge_ee.data import ImageSplit
from edge_ee.errors import CalibrationError, DataError
from edge_ee.exitnet import ExitNet
from edge_ee.exits import ExitSpec
from edge_ee.exits.heads import ClassMeanScorer, ExitHead, FeatureTransform, LinearScorer
from edge_ee.exits.stats import ClassStats

Variant = Sequence[ExitSpec | None]  # one spec (or none) per exit point


def batches(data: ImageSplit, batch_size: int = 256, desc: str | None = None,
            progress: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised float32 NCHW batches with int64 labels, with a progress bar."""
    n = len(data)
    mean = np.asarray(data.mean, np.float32)
    std = np.asarray(data.std, np.float32)
    for i in progress_bar(range(0, n, batch_size), desc=desc, unit="batch", leave=False,
                          disable=not progress or desc is None):
        x = (data.images[i : i + batch_size].astype(np.float32) / 255.0 - mean) / std
        yield (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
               torch.from_numpy(data.labels[i : i + batch_size]))


def _last_needed(variants: Sequence[Variant]) -> int:
    idx = [i for v in variants for i, s in enumerate(v) if s is not None]
    return max(idx) if idx else -1


@torch.no_grad()
def fit_statistics(net: ExitNet, variants: Sequence[Variant], data: ImageSplit,
                   batch_size: int = 256, progress: bool = True) -> list[list[ClassStats | None]]:
    """One pass: class statistics for every exit of every variant."""
    net.eval()
    k = len(data.classes)
    if data.labels.size and (data.labels.min() < 0 or data.labels.max() >= k):
        raise DataError(f"labels must be in 0..{k - 1}; got {data.labels.min()}..{data.labels.max()}")
    shapes = net.feature_shapes()
    out: list[list[ClassStats | None]] = []
    for v in variants:
        if len(v) != net.num_exits:
            raise CalibrationError(f"{len(v)} exit specs for {net.num_exits} exit points")
        out.append([None if s is None else ClassStats(
            k, FeatureTransform(s.pool).out_dim(shapes[i]), with_scatter=s.kind == "lda")
            for i, s in enumerate(v)])
    transforms = [[None if s is None else FeatureTransform(s.pool) for s in v] for v in variants]
    last = _last_needed(variants)
    for x, y in batches(data, batch_size, "class statistics", progress):
        for i in range(last + 1):
            x = net.stages[i](x)
            for vi in range(len(variants)):
                if out[vi][i] is not None:
                    out[vi][i].update(transforms[vi][i](x), y)
    for stats in out:
        for s in stats:
            if s is not None:
                s.check_complete(data.classes)
    return out


def build_heads(stats: Sequence[ClassStats | None], specs: Variant) -> list[ExitHead | None]:
    """Heads with unit scale and no threshold, ready for `score_split`."""
    heads: list[ExitHead | None] = []
    for st, spec in zip(stats, specs, strict=True):
        if spec is None or st is None:
            heads.append(None)
            continue
        mu = st.means()
        if spec.kind == "e2cm":
            scorer: torch.nn.Module = ClassMeanScorer(mu)
        else:
            cov = st.shared_covariance(spec.shrinkage)
            w = torch.linalg.solve(cov, mu.T).T  # (K, D) = μ_k Σ⁻¹
            b = -0.5 * (w * mu).sum(1) + st.priors().clamp_min(1e-12).log()
            scorer = LinearScorer.centered(w, b, st.sums.sum(0) / st.total)
        heads.append(ExitHead(FeatureTransform(spec.pool), scorer, spec.confidence).eval())
    return heads


@dataclass
class ExitScores:
    """Raw scores of every exit on one split, plus the final classifier's logits."""

    raw: list[torch.Tensor | None]
    final_logits: torch.Tensor
    labels: torch.Tensor


@torch.no_grad()
def score_split(net: ExitNet, head_sets: Sequence[Sequence[ExitHead | None]], data: ImageSplit,
                batch_size: int = 256, progress: bool = True, desc: str = "scoring"
                ) -> list[ExitScores]:
    """One full forward pass; each head set's raw exit scores and the final logits."""
    net.eval()
    raws: list[list[list[torch.Tensor]]] = [[[] for _ in hs] for hs in head_sets]
    finals, labels = [], []
    for x, y in batches(data, batch_size, desc, progress):
        for i, stage in enumerate(net.stages):
            x = stage(x)
            for hi, hs in enumerate(head_sets):
                if hs[i] is not None:
                    raws[hi][i].append(hs[i].raw_scores(x))
        finals.append(net.classifier(x))
        labels.append(y)
    final, lab = torch.cat(finals), torch.cat(labels)
    return [ExitScores([torch.cat(r) if r else None for r in rs], final, lab) for rs in raws]


def fit_temperature(z: torch.Tensor, labels: torch.Tensor) -> float:
    """T minimising the NLL of softmax(z / T): a log-grid, then a finer grid around the best."""
    def nll(t: float) -> float:
        return float(torch.nn.functional.cross_entropy(z.double() / t, labels))
    grid = np.logspace(-3, 3, 61)
    best = min(grid, key=nll)
    fine = np.logspace(math.log10(best) - 0.1, math.log10(best) + 0.1, 41)
    return float(min(fine, key=nll))


@torch.no_grad()
def finalize_heads(heads: Sequence[ExitHead | None], specs: Variant,
                   stats: Sequence[ClassStats | None], calib: ExitScores) -> None:
    """Set each head's scale: 1/ν for E2CM (then 1/T where the confidence is `temperature`)."""
    for i, (h, spec) in enumerate(zip(heads, specs, strict=True)):
        if h is None or spec is None:
            continue
        raw = calib.raw[i]
        scale = torch.ones(raw.shape[1], dtype=torch.float64)
        if spec.kind == "e2cm":
            if spec.normaliser == "mean":
                nu = (-raw.double()).mean(0)
            else:
                nu = stats[i].rms_normaliser()
            scale = 1.0 / nu.clamp_min(1e-12)
        if spec.confidence == "temperature":
            scale = scale / fit_temperature(raw.double() * scale, calib.labels)
        h.scorer.scale.copy_(scale.float())


@torch.no_grad()
def decisions(heads: Sequence[ExitHead | None], scores: ExitScores
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per exit (E rows, N columns): predictions, confidences, and whether the head exists.

    Missing heads get confidence −inf (never exit). Row E (last) is the final classifier.
    """
    n = len(scores.labels)
    e = len(heads)
    pred = np.zeros((e + 1, n), np.int64)
    conf = np.full((e + 1, n), -np.inf, np.float32)
    for i, h in enumerate(heads):
        if h is not None:
            p, c, _ = h.decide(scores.raw[i])
            pred[i], conf[i] = p.numpy(), c.numpy()
    pred[e] = scores.final_logits.argmax(1).numpy()
    conf[e] = np.inf
    return pred, conf, np.array([h is not None for h in heads] + [True])
