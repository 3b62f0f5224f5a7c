"""E2CM and a trained exit at the same exit point, combined into one exportable head.

Rules (both offered; `bench_trained_vs_e2cm.py` measures them):

* `mean` (default): p = ½·softmax(z_e2cm) + ½·softmax(z_trained), the average of the two
  class distributions (a mixture of experts with equal weights).
* `product`: p ∝ softmax(z_e2cm) ⊙ softmax(z_trained) (product of experts).

where z_e2cm = −‖f − μ_k‖/ν_k (E2CM's scaled scores) and z_trained = W·pool(f) + b. The head
outputs log p as its raw scores, so the usual confidence criteria apply to p itself
(max_softmax(log p) = max p). Each part keeps its own feature transform (E2CM may use the
raw feature map, the trained linear its pooled feature). Manifest exit kind:
`e2cm+trained` (bundle.py copies `head.scorer.kind`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edge_ee.errors import ConfigError
from edge_ee.exits.heads import ExitHead, FeatureTransform

COMBINE_RULES = ("mean", "product")


class CombinedKind(nn.Module):
    """Placeholder scorer carrying the manifest kind and a unit scale (the parts hold theirs)."""

    kind = "e2cm+trained"

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(num_classes))

    def extra_flops(self, dim: int) -> int:
        return 0


class CombinedHead(ExitHead):
    """An exit head whose class distribution combines an E2CM head and a trained head."""

    def __init__(self, e2cm: ExitHead, trained: ExitHead, rule: str = "mean",
                 confidence: str = "max_softmax", threshold: float = math.inf) -> None:
        if rule not in COMBINE_RULES:
            raise ConfigError(f"combine rule {rule!r} unknown; choose from {COMBINE_RULES}")
        k = int(trained.scorer.scale.shape[0])
        if int(e2cm.scorer.scale.shape[0]) != k:
            raise ConfigError("the E2CM and trained heads have different numbers of classes")
        super().__init__(FeatureTransform(None), CombinedKind(k), confidence, threshold)
        self.parts = nn.ModuleDict({"e2cm": e2cm, "trained": trained})
        self.rule = rule

    def raw_scores(self, feature: torch.Tensor) -> torch.Tensor:
        z1 = self.parts["e2cm"].raw_scores(feature) * self.parts["e2cm"].scorer.scale
        z2 = self.parts["trained"].raw_scores(feature) * self.parts["trained"].scorer.scale
        if self.rule == "mean":
            p = 0.5 * (torch.softmax(z1, dim=1) + torch.softmax(z2, dim=1))
            return torch.log(p.clamp_min(1e-30))
        return torch.log_softmax(z1, dim=1) + torch.log_softmax(z2, dim=1)

    def extra_flops(self, shape: tuple[int, ...]) -> int:
        """Both parts' uncounted work, their two softmaxes and the combination (≈ 4K)."""
        k = int(self.scorer.scale.shape[0])
        parts = sum(h.extra_flops(shape) for h in self.parts.values())  # type: ignore[attr-defined]
        return parts + 4 * k


def combine_heads(e2cm: list[ExitHead | None], trained: list[ExitHead | None], rule: str = "mean",
                  confidence: str = "max_softmax") -> list[ExitHead | None]:
    """Combine per exit point where both heads exist; keep whichever exists otherwise."""
    if len(e2cm) != len(trained):
        raise ConfigError(f"{len(e2cm)} E2CM heads but {len(trained)} trained heads")
    out: list[ExitHead | None] = []
    for a, b in zip(e2cm, trained, strict=True):
        if a is not None and b is not None:
            out.append(CombinedHead(a, b, rule, confidence).eval())
        else:
            out.append(a if a is not None else b)
    return out
