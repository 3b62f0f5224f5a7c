"""`ClusterConfig`: everything `edge-ee cluster` does, one frozen field per CLI flag."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_ee.errors import ConfigError
from edge_ee.pipeline import FitConfig


@dataclass(frozen=True)
class ClusterConfig:
    """Deep embedding clustering with training-free early exits (METHODS §1, unsupervised).

    encoder: a registered source (`fashion-ae`, `resnet-cifar`; see `encoders.py`).
    clusters: K for k-means on the final embedding (≥ 2, ≤ the fitting samples).
    fit_samples: k-means, exit statistics and calibration on this many random training
      samples (None = the whole training split).
    kmeans_inits: k-means restarts (scikit-learn `n_init`); the lowest inertia wins.
    max_cluster_share: refuse the embedding as collapsed when one cluster holds more
      than this share of the fitting samples.
    fit: exit kind, thresholds search and its accuracy budget, where "accuracy" is the
      agreement of an exit with the final cluster assignment (no labels are used).
    runner_samples: test images the bundle is run on with `edge-ee-run` (0 = none).
    """

    out: str
    encoder: str = "fashion-ae"
    data: str | None = None
    weights: str | None = None
    train_epochs: int = 0
    clusters: int = 10
    fit_samples: int | None = None
    kmeans_inits: int = 10
    max_cluster_share: float = 0.9
    fit: FitConfig = field(default_factory=FitConfig)
    runner_samples: int = 0
    threads: int = 1
    name: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.clusters < 2:
            raise ConfigError(f"--clusters must be ≥ 2 (one cluster is no clustering), got "
                              f"{self.clusters}")
        if self.fit_samples is not None and self.fit_samples < self.clusters:
            raise ConfigError(f"--fit-samples {self.fit_samples} is fewer than --clusters "
                              f"{self.clusters}; use more samples or fewer clusters")
        if self.kmeans_inits < 1:
            raise ConfigError(f"--kmeans-inits must be ≥ 1, got {self.kmeans_inits}")
        if not 1.0 / self.clusters < self.max_cluster_share <= 1.0:
            raise ConfigError(f"--max-cluster-share must be in (1/K, 1] = "
                              f"({1 / self.clusters:.3f}, 1], got {self.max_cluster_share}")
        if self.train_epochs < 0 or self.runner_samples < 0 or self.threads < 1:
            raise ConfigError("--train-epochs and --runner-samples must be ≥ 0, --threads ≥ 1")
