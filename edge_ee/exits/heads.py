"""Exit heads as exportable torch modules: feature transform → scorer → confidence → flag.

Scorers (registered in `SCORER_CLASSES`):
* `ClassMeanScorer`: E2CM. z_k = −‖f − μ_k‖ / ν_k, the distance in GEMM form
  ‖f‖² − 2 f·μ_k + ‖μ_k‖² so it exports as one MatMul.
* `LinearScorer`: z = W f + b; used by the shared-covariance (LDA) exit and, later, by
  trained exits.

Confidence criteria (registered in `CONFIDENCE_CLASSES`): `max_softmax`, `margin`
(top-1 − top-2 score), `temperature` (max softmax(z/T)) and `distance` (max z: minus the
normalised distance to the nearest class mean). Every constant (means,
normalisers, T, threshold) is a buffer, so it is baked into the exported graph.

Two forms of the same maths. Calibration uses `raw_scores` (unscaled, what the search
stores) then `decide`. The exported graph (`forward`) uses each scorer's lean form
`scaled`, which folds every constant into one MatMul's weight and one bias (MatMul + Add,
which onnxruntime fuses into one Gemm; written so rather than `addmm` because the int8
paths look for the head's MatMul): E2CM is Mul+ReduceSum (‖x‖²), MatMul(x, −2μᵀ),
Add(‖μ‖²), Add, Relu, Sqrt, Mul(−scale); the linear/LDA scorer is Sub(centre),
MatMul(W·scale), Add(b·scale). Pooling over large windows is a Reshape + ReduceMean, not AveragePool (7×
faster in onnxruntime at 28×28). Same decisions (the export validation checks them against `decide`);
`benchmarks/bench_lean_heads.py` measures each head in µs on onnxruntime, before/after.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LARGE_POOL_WINDOW = 64  # pooling windows above this many elements use ReduceMean


class FeatureTransform(nn.Module):
    """Optional adaptive average pooling, then flatten to (B, D)."""

    def __init__(self, pool: int | None) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None and x.dim() == 4:
            p, (h, w) = self.pool, x.shape[2:]
            if h % p == 0 and w % p == 0 and (h // p) * (w // p) > LARGE_POOL_WINDOW:
                # same means as a Reshape + ReduceMean: onnxruntime's AveragePool is slow for
                # large windows (24×28×28 → 2×2: 44 µs against 6 µs, bench_lean_heads.py)
                return x.unflatten(2, (p, h // p)).unflatten(4, (p, w // p)).mean((3, 5)).flatten(1)
            x = F.adaptive_avg_pool2d(x, self.pool)
        return x.flatten(1)

    def out_dim(self, shape: tuple[int, ...]) -> int:
        if self.pool is not None and len(shape) == 3:
            return shape[0] * self.pool * self.pool
        return math.prod(shape)

    def extra_flops(self, shape: tuple[int, ...]) -> int:
        """Averaging costs one add per input element (flop_counter does not count it)."""
        return math.prod(shape) if self.pool is not None and len(shape) == 3 else 0


class ClassMeanScorer(nn.Module):
    """E2CM scores z_k = −‖x − μ_k‖ · scale_k, with scale = 1/(ν·T)."""

    kind = "e2cm"

    def __init__(self, means: torch.Tensor, scale: torch.Tensor | None = None) -> None:
        super().__init__()
        k, _ = means.shape
        self.register_buffer("means_t", means.to(torch.float32).T.contiguous())  # (D, K)
        self.register_buffer("mean_sq", (means.to(torch.float64) ** 2).sum(1).float())
        self.register_buffer("scale", torch.ones(k) if scale is None else scale.float())

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """−‖x − μ_k‖ without the per-class scale (what calibration stores)."""
        sq = (x * x).sum(1, keepdim=True) - 2.0 * (x @ self.means_t) + self.mean_sq
        return -sq.clamp_min(0.0).sqrt()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.raw(x) * self.scale

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` in the fewest operators: z = √max(0, ‖x‖² + x·(−2μᵀ) + ‖μ‖²) · (−scale)."""
        d2 = x @ (self.means_t * -2.0) + self.mean_sq + (x * x).sum(1, keepdim=True)
        return d2.relu().sqrt() * self.scale.neg()

    def extra_flops(self, dim: int) -> int:
        """METHODS §1 counts the distance as K·(3D−1); the MatMul's 2KD are counted by torch."""
        k = self.means_t.shape[1]
        return k * (3 * dim - 1) - 2 * k * dim + 3 * k


class LinearScorer(nn.Module):
    """z = (W (x − c) + b) · scale, with an optional centre c.

    Class scores only matter up to a per-sample shift (softmax, margin and argmax ignore
    it), so `centered` rewrites W x + b as (W − w̄)(x − m) + b' in float64 before the cast:
    the same decisions with small, well-conditioned float32 numbers.
    """

    kind = "linear"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor,
                 scale: torch.Tensor | None = None, center: torch.Tensor | None = None) -> None:
        super().__init__()
        k, d = weight.shape
        self.register_buffer("weight_t", weight.to(torch.float32).T.contiguous())  # (D, K)
        self.register_buffer("bias", bias.float())
        self.register_buffer("center", torch.zeros(d) if center is None else center.float())
        self.register_buffer("scale", torch.ones(k) if scale is None else scale.float())

    @classmethod
    def centered(cls, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor
                 ) -> LinearScorer:
        w = weight.double() - weight.double().mean(0, keepdim=True)
        b = bias.double() + w @ mean.double()
        return cls(w, b - b.mean(), center=mean.double())

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) @ self.weight_t + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.raw(x) * self.scale

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` in the fewest operators: (x − c)·(W·scale) + b·scale (the centre is
        kept: folding it into the bias would reintroduce the cancellation it avoids)."""
        return (x - self.center) @ (self.weight_t * self.scale) + self.bias * self.scale

    def extra_flops(self, dim: int) -> int:
        return 2 * self.weight_t.shape[1]


class MaxSoftmax(nn.Module):
    name = "max_softmax"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(z, dim=1).amax(dim=1)


class Margin(nn.Module):
    name = "margin"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        top = torch.topk(z, 2, dim=1).values
        return top[:, 0] - top[:, 1]


class NearestDistance(nn.Module):
    """max_k z_k: for E2CM, −(normalised distance to the nearest mean); exits when the feature
    is close enough to one of the means (METHODS §1, the unsupervised reading)."""

    name = "distance"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.amax(dim=1)


class Entropy(nn.Module):
    """Negative entropy of softmax(z): higher = more confident (for trained exits)."""

    name = "entropy"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(z, dim=1)
        return (logp.exp() * logp).sum(1)


SCORER_CLASSES: dict[str, type[nn.Module]] = {"e2cm": ClassMeanScorer, "lda": LinearScorer}
CONFIDENCE_CLASSES: dict[str, type[nn.Module]] = {
    "max_softmax": MaxSoftmax, "temperature": MaxSoftmax, "margin": Margin, "entropy": Entropy,
    "distance": NearestDistance,
}


class ExitHead(nn.Module):
    """feature → (prediction int64, confidence float32, exit flag bool), threshold baked in."""

    def __init__(self, transform: FeatureTransform, scorer: nn.Module, confidence: str,
                 threshold: float = math.inf) -> None:
        super().__init__()
        self.transform = transform
        self.scorer = scorer
        self.confidence_name = confidence
        self.criterion = CONFIDENCE_CLASSES[confidence]()
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def raw_scores(self, feature: torch.Tensor) -> torch.Tensor:
        return self.scorer.raw(self.transform(feature))

    def decide(self, z_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = z_raw * self.scorer.scale
        conf = self.criterion(z)
        return z.argmax(dim=1), conf, conf > self.threshold

    def scores(self, feature: torch.Tensor) -> torch.Tensor:
        """Scaled scores z in the scorer's lean form where it has one (what is exported)."""
        lean = getattr(self.scorer, "scaled", None)
        if lean is None or type(self).raw_scores is not ExitHead.raw_scores:
            return self.raw_scores(feature) * self.scorer.scale
        return lean(self.transform(feature))

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The exported decision: `decide(raw_scores(f))` with the lean scores."""
        z = self.scores(feature)
        conf = self.criterion(z)
        return z.argmax(dim=1), conf, conf > self.threshold

    def reference_forward(self, feature: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The same decision in the calibration form (for comparisons and benchmarks)."""
        return self.decide(self.raw_scores(feature))

    @property
    def enabled(self) -> bool:
        return bool(torch.isfinite(self.threshold))

    def set_threshold(self, value: float) -> None:
        self.threshold.fill_(float(value))

    def extra_flops(self, shape: tuple[int, ...]) -> int:
        """Work torch's flop counter does not see: pooling, distances, softmax/confidence."""
        dim = self.transform.out_dim(shape)
        k = self.scorer.scale.shape[0]
        return self.transform.extra_flops(shape) + self.scorer.extra_flops(dim) + 3 * k


class FinalHead(nn.Module):
    """The network's own classifier as an exit: logits → prediction, max-softmax confidence."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.classifier(feature)
        return logits.argmax(dim=1), torch.softmax(logits, dim=1).amax(dim=1), logits
