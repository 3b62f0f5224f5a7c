"""Streaming class statistics for one exit: float64 sums, counts, norms and scatter.

Everything E2CM and its shared-covariance variant need is a sum over samples, so one
pass over any amount of data suffices, and partial statistics from several processes
merge by adding (`merge`), i.e. they all-reduce.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from edge_ee.errors import CalibrationError

MAX_SCATTER_DIM = 4096  # a D×D float64 scatter beyond this is too large to be useful here


@dataclass
class ClassStats:
    num_classes: int
    dim: int
    with_scatter: bool = False
    device: torch.device | str = "cpu"  # where the float64 sums live (the features' device)
    sums: torch.Tensor = field(init=False)
    counts: torch.Tensor = field(init=False)
    sq_norm_sum: torch.Tensor = field(init=False)
    scatter: torch.Tensor | None = field(init=False)

    def __post_init__(self) -> None:
        if self.with_scatter and self.dim > MAX_SCATTER_DIM:
            raise CalibrationError(
                f"shared-covariance exits need a {self.dim}×{self.dim} covariance; pool the "
                f"feature (ExitSpec.pool) so that D ≤ {MAX_SCATTER_DIM}"
            )
        kw = {"dtype": torch.float64, "device": self.device}
        self.sums = torch.zeros(self.num_classes, self.dim, **kw)
        self.counts = torch.zeros(self.num_classes, **kw)
        self.sq_norm_sum = torch.zeros((), **kw)
        self.scatter = torch.zeros(self.dim, self.dim, **kw) if self.with_scatter else None

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch of flattened features x (B, D) with labels y (B,)."""
        x64 = x.detach().to(self.sums.device, torch.float64)
        y = y.to(self.sums.device)
        self.sums.index_add_(0, y, x64)
        self.counts += torch.bincount(y, minlength=self.num_classes).to(x64)
        self.sq_norm_sum += (x64 * x64).sum()
        if self.scatter is not None:
            self.scatter += x64.T @ x64

    def all_reduce(self) -> ClassStats:
        """Sum the partial statistics of every torch.distributed process (no-op alone),
        then move them to the CPU for the closed-form heads."""
        from edge_ee.distributed import all_reduce_sum_
        for t in (self.sums, self.counts, self.sq_norm_sum, self.scatter):
            if t is not None:
                all_reduce_sum_(t)
        self.sums, self.counts = self.sums.cpu(), self.counts.cpu()
        self.sq_norm_sum = self.sq_norm_sum.cpu()
        self.scatter = None if self.scatter is None else self.scatter.cpu()
        self.device = "cpu"
        return self

    def merge(self, other: ClassStats) -> None:
        self.sums += other.sums
        self.counts += other.counts
        self.sq_norm_sum += other.sq_norm_sum
        if self.scatter is not None and other.scatter is not None:
            self.scatter += other.scatter

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def check_complete(self, class_names: list[str] | tuple[str, ...] | None = None) -> None:
        missing = (self.counts == 0).nonzero().flatten().tolist()
        if missing:
            names = [class_names[i] if class_names else str(i) for i in missing]
            raise CalibrationError(
                f"no calibration samples for classes {names}; every class needs samples to "
                "get a class mean — add samples of those classes or drop them from the labels"
            )

    def means(self) -> torch.Tensor:
        """μ_k, (K, D) float64."""
        return self.sums / self.counts.clamp_min(1)[:, None]

    def rms_normaliser(self) -> torch.Tensor:
        """sqrt(mean_i ‖x_i − μ_k‖²) over all samples, exact from the sums (one pass)."""
        mu = self.means()
        mean_x = self.sums.sum(0) / self.total
        msd = self.sq_norm_sum / self.total - 2 * mu @ mean_x + (mu * mu).sum(1)
        return msd.clamp_min(1e-12).sqrt()

    def priors(self, smoothing: float = 0.0) -> torch.Tensor:
        """P(k) = (n_k + smoothing) / (N + smoothing·K); smoothing > 0 keeps unseen classes
        at a small non-zero prior (additive / Laplace smoothing)."""
        return (self.counts + smoothing) / (self.total + smoothing * self.num_classes)

    def pooled_within_variance(self) -> float:
        """σ² = pooled within-class variance per dimension, exact from the sums (one pass):
        (Σ‖x‖² − Σ_k ‖s_k‖²/n_k) / ((N − K_seen)·D)."""
        seen = self.counts > 0
        between = ((self.sums[seen] ** 2).sum(1) / self.counts[seen]).sum()
        dof = max(self.total - int(seen.sum()), 1.0) * self.dim
        return float((self.sq_norm_sum - between).clamp_min(0.0) / dof)

    def shared_covariance(self, shrinkage: float) -> torch.Tensor:
        """Pooled within-class covariance shrunk towards tr(Σ)/D·I."""
        if self.scatter is None:
            raise CalibrationError("statistics were gathered without scatter; use kind 'lda'")
        mu = self.means()
        within = self.scatter - (mu.T * self.counts) @ mu
        cov = within / max(self.total - self.num_classes, 1.0)
        target = torch.eye(self.dim, dtype=torch.float64) * (torch.trace(cov) / self.dim)
        return (1 - shrinkage) * cov + shrinkage * target
