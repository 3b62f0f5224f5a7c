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
from typing import Any

import numpy as np
import torch

from converters.progress import progress as progress_bar
from edge_ee.datasets import classes_of, stream
from edge_ee.errors import CalibrationError, DataError
from edge_ee.exitnet import ExitNet
from edge_ee.exits import ExitSpec
from edge_ee.exits.heads import ClassMeanScorer, ExitHead, FeatureTransform, LinearScorer
from edge_ee.exits.stats import ClassStats

Variant = Sequence[ExitSpec | None]  # one spec (or none) per exit point


def batches(data: Any, batch_size: int = 256, desc: str | None = None, progress: bool = True,
            device: str | torch.device = "cpu", shard: bool = False
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised float32 batches with int64 labels (`edge_ee.datasets.stream`: an
    ImageSplit, or any Dataset/DataLoader of (input, label)), with a progress bar."""
    total = None
    if hasattr(data, "__len__"):
        n = len(data.dataset) if isinstance(data, torch.utils.data.DataLoader) else len(data)
        total = -(-n // batch_size)
    yield from progress_bar(stream(data, batch_size, device, shard), total=total, desc=desc,
                            disable=not progress or desc is None, unit="batch", leave=False)


def _last_needed(variants: Sequence[Variant]) -> int:
    idx = [i for v in variants for i, s in enumerate(v) if s is not None]
    return max(idx) if idx else -1


@torch.no_grad()
def fit_statistics(net: ExitNet, variants: Sequence[Variant], data: Any,
                   batch_size: int = 256, progress: bool = True,
                   device: str | torch.device = "cpu") -> list[list[ClassStats | None]]:
    """One pass: class statistics for every exit of every variant.

    `data`: an ImageSplit or any Dataset/DataLoader of (input, label). Sums accumulate in
    float64 on `device` (the CPU for MPS, which has no float64); under torch.distributed
    each process takes its shard and the sums are all-reduced (`edge_ee.distributed`)."""
    dev = torch.device(device)
    net.eval().to(dev)
    classes = classes_of(data)
    k = len(classes)
    shapes = net.feature_shapes()
    acc_dev = torch.device("cpu") if dev.type == "mps" else dev
    out: list[list[ClassStats | None]] = []
    for v in variants:
        if len(v) != net.num_exits:
            raise CalibrationError(f"{len(v)} exit specs for {net.num_exits} exit points")
        out.append([None if s is None else ClassStats(
            k, FeatureTransform(s.pool).out_dim(shapes[i]), with_scatter=s.kind == "lda",
            device=acc_dev) for i, s in enumerate(v)])
    transforms = [[None if s is None else FeatureTransform(s.pool) for s in v] for v in variants]
    last = _last_needed(variants)
    for x, y in batches(data, batch_size, "class statistics", progress, dev, shard=True):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            raise DataError(f"labels must be in 0..{k - 1}; got {int(y.min())}..{int(y.max())} "
                            "— the data's labels do not match the model's classes")
        for i in range(last + 1):
            x = net.stages[i](x)
            for vi in range(len(variants)):
                if out[vi][i] is not None:
                    out[vi][i].update(transforms[vi][i](x), y)
    net.cpu()
    for stats in out:
        for s in stats:
            if s is not None:
                s.all_reduce().check_complete(classes)
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
def score_split(net: ExitNet, head_sets: Sequence[Sequence[ExitHead | None]], data: Any,
                batch_size: int = 256, progress: bool = True, desc: str = "scoring",
                device: str | torch.device = "cpu") -> list[ExitScores]:
    """One full forward pass; each head set's raw exit scores and the final logits (kept
    per sample on the CPU: the only thing a pass keeps)."""
    dev = torch.device(device)
    net.eval().to(dev)
    for hs in head_sets:
        for h in hs:
            if h is not None:
                h.to(dev)
    raws: list[list[list[torch.Tensor]]] = [[[] for _ in hs] for hs in head_sets]
    finals, labels = [], []
    for x, y in batches(data, batch_size, desc, progress, dev):
        for i, stage in enumerate(net.stages):
            x = stage(x)
            for hi, hs in enumerate(head_sets):
                if hs[i] is not None:
                    raws[hi][i].append(hs[i].raw_scores(x).cpu())
        finals.append(net.classifier(x).cpu())
        labels.append(y.cpu())
    net.cpu()
    for hs in head_sets:
        for h in hs:
            if h is not None:
                h.cpu()
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
