"""`PruneDataConfig`: every setting of `edge-ee prune-data` (CLI flags map 1:1 to fields).

Two modes: score once and write a keep file (`scorer`, `ratio`, `keep_out`), or
`evaluate`: score with every method in `scorers`, train fresh models on the kept sets at
every ratio in `ratios` for every seed in `seeds`, plus the D_p check and the exit
location ablation, and write a report to `out`.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_ee.errors import ConfigError

DATASETS = ("fashion-mnist", "cifar10")


@dataclass(frozen=True)
class PruneDataConfig:
    """What to prune, with which scorer and budget, and how to evaluate it."""

    dataset: str = "fashion-mnist"  # fashion-mnist | cifar10
    data: str | None = None  # Fashion-MNIST folder or CIFAR-10 JPEG zip (default: shared data)
    train_per_class: int | None = None  # class-balanced seeded subset of the train split
    test_per_class: int | None = None
    model: str = "compact-cnn"  # compact-cnn | small-cnn
    num_classes: int | None = None  # None = the data's classes
    scorer: str = "eeprune"
    ratio: float = 0.5  # fraction of training samples discarded
    exit: str = "middle"  # eeprune exit: before | middle | after | an exit index
    pool: int = 2
    score_epochs: float = 0.5  # eeprune's few-epoch training
    score_schedule: str = "one-cycle"  # eeprune: one-cycle | constant
    el2n_epochs: float = 1.0
    el2n_seeds: int = 2
    forgetting_epochs: float | None = None  # None = train_epochs (a full run)
    train_epochs: float = 4.0  # one full training run (and every evaluation run)
    batch_size: int = 128
    lr: float = 0.1
    seed: int = 0
    keep_out: str | None = None  # keep file to write (scoring mode)
    check_keep: str | None = None  # verify that this keep file belongs to the data, then stop
    evaluate: bool = False
    scorers: tuple[str, ...] = ("random", "el2n", "forgetting", "eeprune")
    ratios: tuple[float, ...] = (0.3, 0.5, 0.7)
    seeds: tuple[int, ...] = (0, 1, 2)
    class_balanced: tuple[str, ...] = ("eeprune",)  # --evaluate: also the class-balanced reading
    dp_check: bool = True  # train on the discarded set D_p at dp_ratio
    dp_ratio: float = 0.5
    exit_ablation: bool = True  # eeprune at before / middle / after, at ablation_ratio
    ablation_ratio: float = 0.3
    out: str = "prune-data-out"
    threads: int = 1
    profile: str = "generic-x86_64"  # hardware profile for (estimated) energy
    power_source: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        from edge_ee.dataprune.scorers import SCORERS, check_ratio

        if self.dataset not in DATASETS:
            raise ConfigError(f"dataset {self.dataset!r} unknown; choose from {DATASETS}")
        for r in (self.ratio, *self.ratios, self.dp_ratio, self.ablation_ratio):
            check_ratio(r)
        for s in (self.scorer, *self.scorers, *self.class_balanced):
            if s not in SCORERS:
                raise ConfigError(f"unknown scorer {s!r}; valid scorers: {', '.join(sorted(SCORERS))}")
        for name in ("train_per_class", "test_per_class", "num_classes"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name} must be ≥ 1 or unset, got {v}")
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")
        if self.threads < 1:
            raise ConfigError(f"threads must be ≥ 1, got {self.threads}")
        for name in ("score_epochs", "el2n_epochs", "train_epochs", "lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
