"""Class-based thresholds (CBT) for pixel-level early exit, exactly as METHODS.md §3.

φ_n(pixel) is the softmax of exit n's bilinearly upsampled logits at a full-resolution
training pixel. S_k = all training pixels whose ground truth is k (void excluded, correct
or not). p_{n,k} = mean of φ_n over S_k; P_k = (1/N) Σ_n p_{n,k}; T_k = top1 − top2 of P_k;
T_k ← (1 − (T_k − min T)/(max T − min T))·(β − α) + α, so the easiest class gets α and the
hardest gets β. min/max run over the classes present in the training pixels.

Rules for the corner cases (chosen, stated here, tested):
* a class with no training pixel gets β — with no evidence it is treated as the hardest,
  so its pixels exit only as cautiously as the most cautious known class;
* if every present class has the same T (or only one is present), max T − min T = 0 and
  the formula is undefined; all classes then get β (the cautious choice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from converters.progress import progress
from edge_ee.segmentation.data import IGNORE_INDEX, validate_labels
from edge_ee.segmentation.errors import SegmentationError


@dataclass(frozen=True)
class CBTConfig:
    """Threshold range [α, β] with 0 < α ≤ β ≤ 1."""

    alpha: float = 0.99
    beta: float = 0.998

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise SegmentationError(f"CBT {name} must be a finite number, got {v!r}")
            if not 0.0 < v <= 1.0:
                raise SegmentationError(f"CBT {name}={v} must lie in (0, 1]")
        if self.alpha > self.beta:
            raise SegmentationError(
                f"CBT alpha={self.alpha} > beta={self.beta}; alpha is the easiest class's "
                "threshold and must not exceed beta")


@dataclass(frozen=True)
class CBTResult:
    """Per-class thresholds and the statistics they came from."""

    thresholds: np.ndarray   # (K,) float64, T_k after rescaling into [α, β]
    class_means: np.ndarray  # (N, K, K) p_{n,k}; NaN rows for absent classes
    shared_means: np.ndarray  # (K, K) P_k
    confidence: np.ndarray   # (K,) raw T_k = top1 − top2 of P_k; NaN for absent classes
    present: np.ndarray      # (K,) bool: class has training pixels
    config: CBTConfig


class CBTStats:
    """Accumulates Σ φ_n over S_k and |S_k| for every exit n and class k."""

    def __init__(self, num_exits: int, num_classes: int,
                 ignore_index: int = IGNORE_INDEX) -> None:
        if num_exits < 1 or num_classes < 2:
            raise SegmentationError("CBT needs at least one exit and two classes")
        self.num_exits, self.num_classes, self.ignore_index = num_exits, num_classes, ignore_index
        self.sums = np.zeros((num_exits, num_classes, num_classes), dtype=np.float64)
        self.counts = np.zeros(num_classes, dtype=np.int64)

    def update(self, probs: list[torch.Tensor] | list[np.ndarray], labels: np.ndarray) -> None:
        """probs: per exit (B,K,H,W) probabilities at label resolution; labels (B,H,W)."""
        if len(probs) != self.num_exits:
            raise SegmentationError(f"got {len(probs)} exits, expected {self.num_exits}")
        labels = np.asarray(labels)
        validate_labels(labels, self.num_classes, self.ignore_index)
        lab = torch.as_tensor(labels.astype(np.int64)).reshape(-1)
        keep = lab != self.ignore_index
        lab = lab[keep]
        self.counts += np.bincount(lab.numpy(), minlength=self.num_classes)
        for n, p in enumerate(probs):
            p = torch.as_tensor(p, dtype=torch.float64)
            if p.ndim != 4 or p.shape[1] != self.num_classes or \
                    tuple(p.shape[2:]) != labels.shape[-2:] or p.shape[0] != labels.shape[0]:
                raise SegmentationError(
                    f"exit {n} probabilities {tuple(p.shape)} do not match labels "
                    f"{labels.shape} with {self.num_classes} classes; upsample to label size")
            flat = p.permute(0, 2, 3, 1).reshape(-1, self.num_classes)[keep]
            acc = torch.zeros(self.num_classes, self.num_classes, dtype=torch.float64)
            acc.index_add_(0, lab, flat)
            self.sums[n] += acc.numpy()

    def class_means(self) -> tuple[np.ndarray, np.ndarray]:
        """(p_{n,k} (N,K,K) with NaN rows for absent classes, present (K,) bool)."""
        present = self.counts > 0
        means = np.full_like(self.sums, np.nan)
        means[:, present] = self.sums[:, present] / self.counts[present][None, :, None]
        return means, present


def cbt_thresholds(class_means: np.ndarray, config: CBTConfig,
                   present: np.ndarray | None = None) -> CBTResult:
    """METHODS.md §3 thresholds from p_{n,k} (N,K,K); absent classes (NaN rows) get β."""
    p = np.asarray(class_means, dtype=np.float64)
    if p.ndim != 3 or p.shape[1] != p.shape[2]:
        raise SegmentationError(f"class_means must be (N,K,K), got {p.shape}")
    k = p.shape[1]
    if present is None:
        present = ~np.isnan(p).any(axis=(0, 2))
    present = np.asarray(present, dtype=bool)
    if present.shape != (k,):
        raise SegmentationError(f"present must be ({k},), got {present.shape}")
    if np.isnan(p[:, present]).any():
        raise SegmentationError("class_means has NaN for a class marked present")
    shared = np.full((k, k), np.nan)
    shared[present] = p[:, present].mean(axis=0)          # P_k = (1/N) Σ_n p_{n,k}
    conf = np.full(k, np.nan)
    if present.any():
        top2 = np.sort(shared[present], axis=1)[:, -2:]
        conf[present] = top2[:, 1] - top2[:, 0]            # T_k = top1 − top2
    thr = np.full(k, float(config.beta))
    if present.any():
        t = conf[present]
        lo, hi = t.min(), t.max()
        if hi > lo:
            thr[present] = (1.0 - (t - lo) / (hi - lo)) * (config.beta - config.alpha) \
                + config.alpha
    return CBTResult(thresholds=thr, class_means=p, shared_means=shared, confidence=conf,
                     present=present, config=config)


def single_thresholds(threshold: float, num_classes: int) -> np.ndarray:
    """ADP-C's single threshold as a per-class vector: max_k φ_k ≥ t ⇔ OR_k(φ_k ≥ t)."""
    CBTConfig(alpha=threshold, beta=threshold)  # same range check
    return np.full(num_classes, float(threshold))


@torch.no_grad()
def collect_cbt_stats(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray,
                      batch_size: int = 16) -> CBTStats:
    """Run every exit densely over (normalised float images, labels) and accumulate φ."""
    from edge_ee.segmentation.model import upsample_logits

    model.eval()
    cfg = model.config
    stats = CBTStats(cfg.num_exits, cfg.num_classes)
    for i in progress(range(0, len(images), batch_size), desc="CBT statistics", unit="batch"):
        x = torch.as_tensor(images[i:i + batch_size])
        outs = model(x)
        probs = [torch.softmax(upsample_logits(o, cfg.image_hw), dim=1) for o in outs]
        stats.update(probs, labels[i:i + batch_size])
    return stats
