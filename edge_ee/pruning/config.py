"""Pruning configuration (frozen; `edge-ee prune` flags and recipe keys map 1:1) and checks.

Layer names are module names of the `EarlyExitModel` (`net.stages.3.conv1`,
`exits.0.linear`, `net.classifier.linear`); `check_layers` refuses names that do not
exist and suggests the nearest ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from edge_ee.errors import ConfigError

PRUNE_METHODS = ("unstructured", "structured")
PRUNE_SCHEDULES = ("simultaneous", "sequential")
PRUNE_RECOVERIES = ("ce", "distill")  # edge_ee/pruning/recovery.py registers them
KD_EXIT_TEACHERS = ("counterpart", "final")
BUDGET_CLOCKS = ("wall", "cpu")


@dataclass(frozen=True)
class PruneConfig:
    """Iterative magnitude pruning + fine-tuning of a backbone with trained exits (METHODS §2).

    ratio: unstructured: fraction of the pool's weights set to zero; structured: fraction
      of the prunable channels removed (global ranking across layers, torch-pruning).
    rounds: prune → fine-tune rounds (the paper: 20). Unstructured rounds remove a
      constant fraction 1 − (1 − ratio)^(1/rounds) of the remaining weights; structured
      rounds follow torch-pruning's linear schedule ratio·r/rounds.
    steps_per_round: SGD steps of fine-tuning after each pruning round (per phase for the
      sequential schedule; its phase 2 uses `exit_steps_per_round` when set).
    recovery: the loss of every fine-tuning step — `ce` (cross-entropy on the labels) or
      `distill` (Hinton knowledge distillation from the unpruned network:
      α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y) per output; each exit learns
      from its unpruned counterpart exit or, with kd_exit_teacher='final', from the
      unpruned final output).
    recover_epochs: epochs over the data after the last round (fractions allowed), at
      `recover_lr` (backbone; exits at `exit_lr`) decaying along a cosine to 0.
    budget_min: budget of the whole pruning job in minutes (accuracy evaluations not
      counted); recovery stops there and the cosine is stretched to it. budget_clock
      `wall` counts wall-clock time, `cpu` the process's CPU time (all threads) — on a
      shared machine, 2 dedicated cores for 15 min are `--budget-min 30 --budget-clock cpu`.
    max_accuracy_drop: allowed drop of the final output's accuracy versus the unpruned
      network (fraction, 0.03 = 3 points); more is reported as a warning saying what to do.
    """

    method: str = "unstructured"
    schedule: str = "simultaneous"
    ratio: float = 0.5
    rounds: int = 5
    steps_per_round: int = 20
    exit_steps_per_round: int | None = None
    batch_size: int = 64
    lr: float = 0.01  # backbone fine-tuning
    exit_lr: float = 0.02  # exit heads fine-tuning
    momentum: float = 0.9
    weight_decay: float = 5e-4
    exit_weight: float = 1.0  # loss weight of every exit in joint fine-tuning (final: 1)
    ignore_layers: tuple[str, ...] = ()
    seed: int = 0
    recovery: str = "ce"
    recover_epochs: float = 0.0
    recover_lr: float = 0.01
    kd_temperature: float = 4.0
    kd_alpha: float = 0.9
    kd_exit_teacher: str = "counterpart"
    budget_min: float | None = None
    budget_clock: str = "wall"
    max_accuracy_drop: float = 0.03

    def __post_init__(self) -> None:
        if self.method not in PRUNE_METHODS:
            raise ConfigError(f"pruning method {self.method!r} unknown; choose from {PRUNE_METHODS}")
        if self.schedule not in PRUNE_SCHEDULES:
            raise ConfigError(f"schedule {self.schedule!r} unknown; choose from {PRUNE_SCHEDULES}")
        if not isinstance(self.ratio, (int, float)) or not 0.0 < float(self.ratio) < 1.0:
            raise ConfigError(f"pruning ratio must be in (0, 1) (e.g. 0.5 removes half), "
                              f"got {self.ratio}")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be ≥ 1, got {self.rounds}")
        if self.steps_per_round < 0:
            raise ConfigError(f"steps_per_round must be ≥ 0, got {self.steps_per_round}")
        if self.exit_steps_per_round is not None and self.exit_steps_per_round < 0:
            raise ConfigError(f"exit_steps_per_round must be ≥ 0, got {self.exit_steps_per_round}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {self.batch_size}")
        for name in ("lr", "exit_lr", "recover_lr", "kd_temperature"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.recovery not in PRUNE_RECOVERIES:
            raise ConfigError(f"recovery {self.recovery!r} unknown; choose from {PRUNE_RECOVERIES}")
        if self.budget_clock not in BUDGET_CLOCKS:
            raise ConfigError(f"budget_clock {self.budget_clock!r} unknown; choose from "
                              f"{BUDGET_CLOCKS}")
        if self.kd_exit_teacher not in KD_EXIT_TEACHERS:
            raise ConfigError(f"kd_exit_teacher {self.kd_exit_teacher!r} unknown; choose from "
                              f"{KD_EXIT_TEACHERS}")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise ConfigError(f"kd_alpha must be in [0, 1] (weight of the distillation term), "
                              f"got {self.kd_alpha}")
        if not self.recover_epochs >= 0:
            raise ConfigError(f"recover_epochs must be ≥ 0, got {self.recover_epochs}")
        if self.budget_min is not None and not self.budget_min > 0:
            raise ConfigError(f"budget_min must be > 0 minutes or unset, got {self.budget_min}")
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ConfigError(f"max_accuracy_drop must be in [0, 1] (0.03 = 3 points), "
                              f"got {self.max_accuracy_drop}")

    @property
    def exit_steps(self) -> int:
        return self.steps_per_round if self.exit_steps_per_round is None else self.exit_steps_per_round


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv2d and Linear of the model, by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def check_layers(model: nn.Module, names: Iterable[str], what: str = "ignore_layers") -> None:
    """Refuse layer names that are not modules of `model`, naming the nearest real ones."""
    modules = [n for n, _ in model.named_modules() if n]
    for name in names:
        if name not in modules:
            close = difflib.get_close_matches(name, modules, n=3, cutoff=0.5)
            hint = f"did you mean {close}?" if close else f"e.g. {modules[:5]}"
            raise ConfigError(f"{what}: layer {name!r} does not exist in this model; {hint} "
                              "(names are module names of the early-exit model)")
