"""Pruning schedules for early-exit networks (METHODS §2), registered by name.

* `simultaneous`: backbone and exit weights in one pruning pool; after each round the
  whole network is fine-tuned on Σ_n w·CE(exit n) + CE(final).
* `sequential`: phase 1 prunes the backbone (exit heads out of the pool and out of the
  importance ranking) and fine-tunes it on the final loss only; phase 2 freezes the
  backbone (eval mode, no gradients) and prunes + fine-tunes the exits on their losses.
  Structured pruning has nothing to prune inside an exit (a single linear layer whose
  inputs follow the backbone's channels and whose outputs are classes), so its phase 2
  only fine-tunes the exits.

`prune_early_exit` runs a schedule on a deep copy and returns it with a `PruneReport`
(per-layer sparsity, FLOPs and parameters before/after, a digest of the backbone after
each phase).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from converters.progress import progress as progress_bar
from edge_ee.data import ImageSplit
from edge_ee.exits.trained import EarlyExitModel, run_sgd, weighted_loss
from edge_ee.pruning.config import PruneConfig, check_layers, prunable_layers
from edge_ee.pruning.methods import PRUNING_METHODS, PruningMethod


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
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    backbone_digest: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in (
            "schedule", "method", "ratio", "rounds", "layer_sparsity", "flops_before",
            "flops_after", "params_before", "params_after", "seconds", "backbone_digest")}


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
    """Runs pruning rounds and fine-tuning on `model` in place."""

    name: ClassVar[str] = ""

    def __init__(self, cfg: PruneConfig, data: ImageSplit, progress: bool = True) -> None:
        self.cfg, self.data, self.progress = cfg, data, progress

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

    def finetune_joint(self, model: EarlyExitModel, seed: int, report: PruneReport) -> None:
        n = len(model.exit_indices)
        weights = [self.cfg.exit_weight] * n + [1.0]
        model.train()

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return weighted_loss(model(x), y, weights)
        self._sgd(model, loss, [(model.exit_parameters(), self.cfg.exit_lr),
                                (model.backbone_parameters(), self.cfg.lr)],
                  self.cfg.steps_per_round, seed, report)

    def finetune_backbone(self, model: EarlyExitModel, seed: int, report: PruneReport) -> None:
        model.train()

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(model.net(x), y)
        self._sgd(model, loss, [(model.backbone_parameters(), self.cfg.lr)],
                  self.cfg.steps_per_round, seed, report)

    def finetune_exits_frozen(self, model: EarlyExitModel, seed: int, report: PruneReport) -> None:
        model.eval()
        model.exits.train()
        n = len(model.exit_indices)

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return weighted_loss(model.exit_outputs_frozen(x), y, [1.0] * n)
        self._sgd(model, loss, [(model.exit_parameters(), self.cfg.exit_lr)],
                  self.cfg.exit_steps, seed, report)

    def _sgd(self, model: EarlyExitModel, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             groups: list[tuple[list[nn.Parameter], float]], steps: int, seed: int,
             report: PruneReport) -> None:
        if steps > 0:
            rep = run_sgd(self.data, groups, loss, steps=steps, batch_size=self.cfg.batch_size,
                          momentum=self.cfg.momentum,
                          weight_decay=self.cfg.weight_decay, seed=seed, progress=False)
            report.losses.extend(rep.losses)
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
        finally:
            for p in params:
                p.requires_grad_(True)
            model.eval()
        report.backbone_digest["final"] = backbone_digest(model)


SCHEDULES: dict[str, type[Schedule]] = {Simultaneous.name: Simultaneous, Sequential.name: Sequential}


def prune_early_exit(model: EarlyExitModel, data: ImageSplit, cfg: PruneConfig,
                     progress: bool = True) -> tuple[EarlyExitModel, PruneReport]:
    """Prune a deep copy of `model` with `cfg`'s method and schedule; the input is untouched."""
    from edge_ee.cost import count_flops

    check_layers(model, cfg.ignore_layers)
    pruned = copy.deepcopy(model).eval()
    example = torch.zeros((1, *pruned.net.input_shape))
    numel = {n: m.weight.numel() for n, m in prunable_layers(pruned).items()}
    report = PruneReport(cfg.schedule, cfg.method, cfg.ratio, cfg.rounds, numel,
                         flops_before=count_flops(pruned, example),
                         params_before=nonzero_params(pruned))
    t0 = time.perf_counter()
    SCHEDULES[cfg.schedule](cfg, data, progress).run(pruned, report)
    report.seconds = time.perf_counter() - t0
    pruned.eval()
    report.layer_sparsity = layer_sparsity(pruned, numel)
    report.flops_after = count_flops(pruned, example)
    report.params_after = nonzero_params(pruned)
    return pruned, report
