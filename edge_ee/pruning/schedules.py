"""Pruning schedules for early-exit networks (METHODS §2), registered by name.

* `simultaneous`: backbone and exit weights in one pruning pool; after each round the
  whole network is fine-tuned on Σ_n w·CE(exit n) + CE(final).
* `sequential`: phase 1 prunes the backbone (exit heads out of the pool and out of the
  importance ranking) and fine-tunes it on the final loss only; phase 2 freezes the
  backbone (eval mode, no gradients) and prunes + fine-tunes the exits on their losses.
  Structured pruning has nothing to prune inside an exit (a single linear layer whose
  inputs follow the backbone's channels and whose outputs are classes), so its phase 2
  only fine-tunes the exits.

Every fine-tuning step uses the configured recovery loss (`recovery.py`: `ce`, or
`distill` from the unpruned network). After the last round, `recover_epochs` of recovery
fine-tuning follow on a cosine learning rate (simultaneous: the whole network; sequential:
the backbone at the end of phase 1, the exits at the end of phase 2), and stop at the
`budget_min` budget (wall clock or process CPU time, `budget_clock`).

`prune_early_exit` runs a schedule on a deep copy and returns it with a `PruneReport`
(per-layer sparsity, FLOPs and parameters before/after, a digest of the backbone after
each phase, wall and process CPU time, and — given evaluation data — per-exit accuracy
before pruning, after pruning and after recovery, with warnings when it dropped too far).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from converters.progress import progress as progress_bar
from edge_ee.data import ImageSplit
from edge_ee.exits.trained import EarlyExitModel, exit_accuracies, run_sgd
from edge_ee.pruning.config import PruneConfig, check_layers, prunable_layers
from edge_ee.pruning.methods import PRUNING_METHODS, PruningMethod
from edge_ee.pruning.recovery import RECOVERIES, accuracy_warnings

log = logging.getLogger(__name__)


@dataclass
class PruneReport:
    schedule: str
    method: str
    ratio: float
    rounds: int
    layer_numel_before: dict[str, int]
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    flops_before: int = 0
    flops_after: int = 0
    params_before: int = 0
    params_after: int = 0  # nonzero parameters
    seconds: float = 0.0  # wall time of pruning + fine-tuning (evaluations not counted)
    cpu_seconds: float = 0.0  # process CPU time of the same (all threads)
    losses: list[float] = field(default_factory=list)
    backbone_digest: dict[str, str] = field(default_factory=dict)
    recovery: str = "ce"
    recover_steps_planned: int = 0
    recover_steps: int = 0
    budget_s: float | None = None
    budget_clock: str = "wall"
    stopped_at_budget: bool = False
    eval_seconds: float = 0.0
    accuracy_before: list[float] = field(default_factory=list)  # per exit, then final
    accuracy_pruned: list[float] = field(default_factory=list)  # after the rounds, before recovery
    accuracy_after: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in (
            "schedule", "method", "ratio", "rounds", "layer_sparsity", "flops_before",
            "flops_after", "params_before", "params_after", "seconds", "cpu_seconds",
            "backbone_digest", "recovery", "recover_steps_planned", "recover_steps",
            "budget_s", "budget_clock", "stopped_at_budget", "eval_seconds", "accuracy_before",
            "accuracy_pruned", "accuracy_after", "warnings")}


def backbone_digest(model: EarlyExitModel) -> str:
    """sha256 over every backbone parameter and buffer (detects any change)."""
    h = hashlib.sha256()
    for name, t in [*model.net.named_parameters(), *model.net.named_buffers()]:
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def nonzero_params(model: nn.Module) -> int:
    return int(sum(int(p.count_nonzero()) for p in model.parameters()))


def layer_sparsity(model: nn.Module, numel_before: dict[str, int]) -> dict[str, float]:
    """Per layer: 1 − nonzero weights now / weights before pruning (channels removed count)."""
    layers = prunable_layers(model)
    return {n: 1.0 - int(layers[n].weight.count_nonzero()) / numel_before[n]
            for n in numel_before if n in layers}


class Schedule:
    """Runs pruning rounds and fine-tuning on `model` in place.

    `teacher`: the unpruned network (recovery 'distill'); `deadline`: a value of
    `clock` (wall or process CPU time, per `cfg.budget_clock`) after which no fine-tuning
    step starts; `on_pruned`: called with the model once the pruning rounds are done,
    before recovery (evaluation).
    """

    name: ClassVar[str] = ""

    def __init__(self, cfg: PruneConfig, data: ImageSplit, progress: bool = True,
                 teacher: EarlyExitModel | None = None) -> None:
        self.cfg, self.data, self.progress = cfg, data, progress
        self.loss = RECOVERIES[cfg.recovery](cfg, teacher)
        self.deadline: float | None = None  # on `self.clock`
        self.clock = time.process_time if cfg.budget_clock == "cpu" else time.perf_counter
        self.on_pruned: Callable[[EarlyExitModel], None] | None = None

    def run(self, model: EarlyExitModel, report: PruneReport) -> None:
        raise NotImplementedError

    # helpers shared by the schedules
    def pools(self, model: EarlyExitModel) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
        skip = set(self.cfg.ignore_layers)
        layers = {n: m for n, m in prunable_layers(model).items() if n not in skip}
        backbone = {n: m for n, m in layers.items() if n.startswith("net.")}
        exits = {n: m for n, m in layers.items() if n.startswith("exits.")}
        return backbone, exits

    def method(self, model: EarlyExitModel, pool: dict[str, nn.Module],
               score_exclude: list[nn.Module] | None = None) -> PruningMethod:
        example = torch.zeros((1, *model.net.input_shape))
        return PRUNING_METHODS[self.cfg.method](model, pool, self.cfg.ratio, self.cfg.rounds,
                                                example, score_exclude or [])

    @property
    def recover_steps(self) -> int:
        return math.ceil(self.cfg.recover_epochs * len(self.data) / self.cfg.batch_size)

    def pruned(self, model: EarlyExitModel) -> None:
        if self.on_pruned is not None:
            self.on_pruned(model)

    def finetune_joint(self, model: EarlyExitModel, seed: int, report: PruneReport,
                       recover: bool = False) -> None:
        n = len(model.exit_indices)
        weights, which = [self.cfg.exit_weight] * n + [1.0], list(range(n + 1))
        model.train()

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.loss(model(x), x, y, weights, which)
        lr = self.cfg.recover_lr if recover else self.cfg.lr
        self._sgd(model, loss, [(model.exit_parameters(), self.cfg.exit_lr),
                                (model.backbone_parameters(), lr)],
                  self.recover_steps if recover else self.cfg.steps_per_round, seed, report,
                  recover)

    def finetune_backbone(self, model: EarlyExitModel, seed: int, report: PruneReport,
                          recover: bool = False, deadline: float | None = None) -> None:
        model.train()
        final = [len(model.exit_indices)]

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.loss((model.net(x),), x, y, [1.0], final)
        lr = self.cfg.recover_lr if recover else self.cfg.lr
        self._sgd(model, loss, [(model.backbone_parameters(), lr)],
                  self.recover_steps if recover else self.cfg.steps_per_round, seed, report,
                  recover, deadline)

    def finetune_exits_frozen(self, model: EarlyExitModel, seed: int, report: PruneReport,
                              recover: bool = False) -> None:
        model.eval()
        model.exits.train()
        n = len(model.exit_indices)

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.loss(model.exit_outputs_frozen(x), x, y, [1.0] * n, list(range(n)))
        self._sgd(model, loss, [(model.exit_parameters(), self.cfg.exit_lr)],
                  self.recover_steps if recover else self.cfg.exit_steps, seed, report, recover)

    def _sgd(self, model: EarlyExitModel, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             groups: list[tuple[list[nn.Parameter], float]], steps: int, seed: int,
             report: PruneReport, recover: bool = False, deadline: float | None = None) -> None:
        if steps > 0:
            rep = run_sgd(self.data, groups, loss, steps=steps, batch_size=self.cfg.batch_size,
                          momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay,
                          seed=seed, progress=self.progress, cosine=recover,
                          deadline=deadline or self.deadline, clock=self.clock,
                          desc=f"recover ({self.cfg.recovery})" if recover else None)
            report.losses.extend(rep.losses)
            report.stopped_at_budget |= rep.stopped_at_deadline
            if recover:
                report.recover_steps_planned += rep.planned_steps
                report.recover_steps += rep.steps
        model.eval()

    def rounds(self, desc: str) -> Iterable[int]:
        return progress_bar(range(self.cfg.rounds), desc=desc, unit="round",
                            disable=not self.progress, leave=False)


class Simultaneous(Schedule):
    name = "simultaneous"

    def run(self, model: EarlyExitModel, report: PruneReport) -> None:
        backbone, exits = self.pools(model)
        method = self.method(model, {**backbone, **exits})
        for r in self.rounds(f"prune {self.cfg.method} (simultaneous)"):
            method.step()
            self.finetune_joint(model, self.cfg.seed + r, report)
        method.finalize()
        self.pruned(model)
        self.finetune_joint(model, self.cfg.seed + 5000, report, recover=True)
        report.backbone_digest["final"] = backbone_digest(model)


class Sequential(Schedule):
    name = "sequential"

    def run(self, model: EarlyExitModel, report: PruneReport) -> None:
        backbone, exits = self.pools(model)
        frozen_exits = model.exit_parameters()
        for p in frozen_exits:
            p.requires_grad_(False)
        try:
            method = self.method(model, backbone, score_exclude=[m for _, m in
                                                                 model.exits.named_modules()])
            for r in self.rounds(f"prune {self.cfg.method} backbone (sequential 1/2)"):
                method.step()
                self.finetune_backbone(model, self.cfg.seed + r, report)
            method.finalize()
            self.pruned(model)
            # the exits' recovery (phase 2) gets the last quarter of what is left of the budget
            now = self.clock()
            share = None if self.deadline is None else now + 0.75 * max(self.deadline - now, 0)
            self.finetune_backbone(model, self.cfg.seed + 5000, report, recover=True,
                                   deadline=share)
        finally:
            for p in model.exit_parameters():
                p.requires_grad_(True)
        report.backbone_digest["after_phase1"] = backbone_digest(model)
        params = model.backbone_parameters()
        for p in params:
            p.requires_grad_(False)
        try:
            exit_method = (self.method(model, exits) if self.cfg.method == "unstructured"
                           and exits else None)
            for r in self.rounds(f"prune {self.cfg.method} exits (sequential 2/2)"):
                if exit_method is not None:
                    exit_method.step()
                self.finetune_exits_frozen(model, self.cfg.seed + 1000 + r, report)
            if exit_method is not None:
                exit_method.finalize()
            self.finetune_exits_frozen(model, self.cfg.seed + 6000, report, recover=True)
        finally:
            for p in params:
                p.requires_grad_(True)
            model.eval()
        report.backbone_digest["final"] = backbone_digest(model)


SCHEDULES: dict[str, type[Schedule]] = {Simultaneous.name: Simultaneous, Sequential.name: Sequential}


def prune_early_exit(model: EarlyExitModel, data: ImageSplit, cfg: PruneConfig,
                     progress: bool = True, evaluate: ImageSplit | None = None
                     ) -> tuple[EarlyExitModel, PruneReport]:
    """Prune a deep copy of `model` with `cfg`'s method and schedule; the input is untouched
    (it is the teacher of recovery 'distill').

    `evaluate`: a split on which per-exit accuracy is measured before pruning, after the
    rounds and after recovery (not counted in the budget); a final-output drop beyond
    `cfg.max_accuracy_drop` is logged as a warning and kept in `PruneReport.warnings`.
    """
    from edge_ee.cost import count_flops

    check_layers(model, cfg.ignore_layers)
    model.eval()
    pruned = copy.deepcopy(model).eval()
    example = torch.zeros((1, *pruned.net.input_shape))
    numel = {n: m.weight.numel() for n, m in prunable_layers(pruned).items()}
    report = PruneReport(cfg.schedule, cfg.method, cfg.ratio, cfg.rounds, numel,
                         flops_before=count_flops(pruned, example),
                         params_before=nonzero_params(pruned), recovery=cfg.recovery,
                         budget_s=None if cfg.budget_min is None else 60.0 * cfg.budget_min,
                         budget_clock=cfg.budget_clock)
    if evaluate is not None:
        report.accuracy_before = exit_accuracies(model, evaluate)
    schedule = SCHEDULES[cfg.schedule](cfg, data, progress, teacher=model)
    off = {"wall": 0.0, "cpu": 0.0}

    def on_pruned(m: EarlyExitModel) -> None:
        if evaluate is None:
            return
        w, c = time.perf_counter(), time.process_time()
        report.accuracy_pruned = exit_accuracies(m, evaluate)
        spent = {"wall": time.perf_counter() - w, "cpu": time.process_time() - c}
        off["wall"] += spent["wall"]
        off["cpu"] += spent["cpu"]
        if schedule.deadline is not None:  # evaluation is not in the budget
            schedule.deadline += spent[cfg.budget_clock]
    schedule.on_pruned = on_pruned
    t0, c0 = time.perf_counter(), time.process_time()
    if report.budget_s is not None:
        schedule.deadline = schedule.clock() + report.budget_s
    schedule.run(pruned, report)
    report.seconds = time.perf_counter() - t0 - off["wall"]
    report.cpu_seconds = time.process_time() - c0 - off["cpu"]
    report.eval_seconds = off["wall"]
    pruned.eval()
    report.layer_sparsity = layer_sparsity(pruned, numel)
    report.flops_after = count_flops(pruned, example)
    report.params_after = nonzero_params(pruned)
    if evaluate is not None:
        w = time.perf_counter()
        report.accuracy_after = exit_accuracies(pruned, evaluate)
        report.eval_seconds += time.perf_counter() - w
    report.warnings = accuracy_warnings(report, cfg)
    for msg in report.warnings:
        log.warning(msg)
    return pruned, report
