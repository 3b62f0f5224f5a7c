"""Training-free exit heads (E2CM and beyond) and their configuration.

An exit head maps the feature after a stage to class scores z (scorer), turns them into
a confidence (criterion) and compares that with the exit's threshold. Scorers and
confidence criteria are small classes registered by name (see `heads.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_ee.errors import ConfigError

SCORERS = ("e2cm", "lda")
CONFIDENCES = ("max_softmax", "margin", "temperature", "distance")
NORMALISERS = ("mean", "rms")


@dataclass(frozen=True)
class ExitSpec:
    """How one exit decides.

    kind: `e2cm` (distance to class means / normaliser, METHODS §1) or `lda` (shared
      shrunk covariance: linear discriminant analysis, same single statistics pass).
    pool: None = raw flattened feature map (the paper); p = adaptive average pool to p×p.
    confidence: `max_softmax` (the paper), `margin` (top-1 minus top-2 score),
      `temperature` (max softmax of z/T, T fitted by NLL on the calibration split) or
      `distance` (max z = −normalised distance to the nearest mean: "close enough").
    normaliser: e2cm ν_{k}: `mean` = mean ‖f−μ_k‖ over training samples (the paper;
      measured on the calibration split), `rms` = root-mean-square, exact in closed form
      from the single statistics pass.
    shrinkage: lda only: Σ ← (1−λ)Σ + λ·tr(Σ)/D·I.
    """

    kind: str = "e2cm"
    pool: int | None = None
    confidence: str = "max_softmax"
    normaliser: str = "mean"
    shrinkage: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in SCORERS:
            raise ConfigError(f"exit kind {self.kind!r} unknown; choose from {SCORERS}")
        if self.confidence not in CONFIDENCES:
            raise ConfigError(f"confidence {self.confidence!r} unknown; choose from {CONFIDENCES}")
        if self.normaliser not in NORMALISERS:
            raise ConfigError(f"normaliser {self.normaliser!r} unknown; choose from {NORMALISERS}")
        if self.pool is not None and self.pool < 1:
            raise ConfigError(f"pool must be None (raw) or ≥ 1, got {self.pool}")
        if not 0.0 <= self.shrinkage <= 1.0:
            raise ConfigError(f"shrinkage must be in [0, 1], got {self.shrinkage}")

    @property
    def label(self) -> str:
        pool = "raw" if self.pool is None else f"pool{self.pool}"
        return f"{self.kind}-{pool}-{self.confidence}"

    @classmethod
    def parse(cls, text: str) -> ExitSpec:
        """`kind[:pool][:confidence]`, e.g. `e2cm`, `e2cm:2:margin`, `lda:2:temperature`."""
        parts = text.split(":")
        kind = parts[0]
        if len(parts) > 3:
            raise ConfigError(f"exit spec {text!r} has too many parts; use kind[:pool][:confidence]")
        pool_text = parts[1].strip() if len(parts) > 1 else ""
        if pool_text not in ("", "raw") and not pool_text.isdigit():
            raise ConfigError(f"exit spec {text!r}: pool {pool_text!r} is not a whole number; "
                              "use kind[:pool][:confidence], e.g. e2cm:2:margin or e2cm:raw")
        pool = None if pool_text in ("", "raw") else int(pool_text)
        conf = parts[2] if len(parts) > 2 else "max_softmax"
        return cls(kind=kind, pool=pool, confidence=conf)
