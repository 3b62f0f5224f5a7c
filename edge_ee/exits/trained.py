"""Trained exit heads: a linear layer on pooled features after a stage (SDN / BranchyNet).

* `ExitClassifier`: adaptive average pool (p×p, default 1) → flatten → `nn.Linear`.
* `EarlyExitModel`: an `ExitNet` plus its trainable exit classifiers; `forward` returns the
  logits of every exit that has a classifier and then the final logits. That tuple output
  is what training and torch-pruning see, so pruned channels reach the exit heads too.
* `train_exits`: `ic-only` (SDN's IC-only: backbone frozen in eval mode, only the heads
  learn) or `joint` (BranchyNet: backbone and heads together on the weighted sum
  Σ_n w_n·CE(exit n) + w_final·CE(final)).
* `to_exit_heads`: the trained linears as exportable `ExitHead`s with a `TrainedScorer`
  (a `LinearScorer` whose manifest kind is `trained`) and a max-softmax or entropy
  confidence; `calibrate_heads` picks their thresholds with the same greedy search as
  E2CM exits, so they export into the same bundle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from converters.progress import progress as progress_bar
from edge_ee.data import ImageSplit
from edge_ee.errors import ConfigError, ModelError
from edge_ee.exitnet import ExitNet
from edge_ee.exits.fit import batches
from edge_ee.exits.heads import CONFIDENCE_CLASSES, ExitHead, FeatureTransform, LinearScorer

TRAIN_MODES = ("ic-only", "joint")
TRAINED_CONFIDENCES = ("max_softmax", "entropy")


class TrainedScorer(LinearScorer):
    """A trained linear exit; identical maths to `LinearScorer`, manifest kind `trained`."""

    kind = "trained"


class ExitClassifier(nn.Module):
    """Pool the feature map to p×p, flatten, one linear layer → class logits."""

    def __init__(self, feature_shape: Sequence[int], num_classes: int, pool: int | None = 1) -> None:
        super().__init__()
        self.pool = pool
        self.transform = FeatureTransform(pool)
        self.linear = nn.Linear(self.transform.out_dim(tuple(feature_shape)), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.transform(x))


class EarlyExitModel(nn.Module):
    """ExitNet + trainable exit classifiers; forward → (exit logits…, final logits)."""

    def __init__(self, net: ExitNet, classifiers: dict[int, ExitClassifier]) -> None:
        super().__init__()
        bad = sorted(i for i in classifiers if not 0 <= i < net.num_exits)
        if bad:
            raise ModelError(f"exit points {bad} do not exist; this model has 0..{net.num_exits - 1}")
        self.net = net
        self.exit_indices = sorted(classifiers)
        self.exits = nn.ModuleDict({str(i): classifiers[i] for i in self.exit_indices})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for i, stage in enumerate(self.net.stages):
            x = stage(x)
            if str(i) in self.exits:
                outs.append(self.exits[str(i)](x))
        outs.append(self.net.classifier(x))
        return tuple(outs)

    def exit_outputs_frozen(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Exit logits with the backbone run without gradients (IC-only / sequential phase 2)."""
        outs = []
        last = self.exit_indices[-1] if self.exit_indices else -1
        for i, stage in enumerate(self.net.stages[: last + 1]):
            with torch.no_grad():
                x = stage(x)
            if str(i) in self.exits:
                outs.append(self.exits[str(i)](x))
        return tuple(outs)

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def exit_parameters(self) -> list[nn.Parameter]:
        return list(self.exits.parameters())

    @property
    def num_classes(self) -> int:
        return next(iter(self.exits.values())).linear.out_features if self.exits else 0


def attach_exits(net: ExitNet, exits: Sequence[int] | None = None, pool: int | None = 1,
                 seed: int = 0) -> EarlyExitModel:
    """New (randomly initialised, seeded) linear exits after the given exit points."""
    idx = list(range(net.num_exits)) if exits is None else list(exits)
    shapes = net.feature_shapes()
    bad = sorted(i for i in idx if not 0 <= i < net.num_exits)
    if bad:
        raise ConfigError(f"exit points {bad} do not exist; this model has 0..{net.num_exits - 1}")
    net.eval()
    with torch.no_grad():
        k = int(net(torch.zeros((1, *net.input_shape))).shape[1])
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        heads = {i: ExitClassifier(shapes[i], k, pool) for i in idx}
    return EarlyExitModel(net, heads)


@dataclass(frozen=True)
class TrainExitsConfig:
    """How exits are trained (CLI flags of `edge-ee train-exits` map 1:1)."""

    mode: str = "ic-only"  # ic-only (SDN, backbone frozen) | joint (BranchyNet)
    exits: tuple[int, ...] | None = None  # exit points that get a head; None = all
    pool: int = 1
    epochs: int = 1
    max_steps: int | None = None  # stop after this many SGD steps (quick runs, tests)
    batch_size: int = 64
    lr: float = 0.05  # exit heads
    backbone_lr: float = 0.005  # joint mode only
    momentum: float = 0.9
    weight_decay: float = 5e-4
    exit_weights: tuple[float, ...] | None = None  # joint: one loss weight per exit; None = 1
    final_weight: float = 1.0
    confidence: str = "max_softmax"  # max_softmax | entropy
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in TRAIN_MODES:
            raise ConfigError(f"mode {self.mode!r} unknown; choose from {TRAIN_MODES}")
        if self.confidence not in TRAINED_CONFIDENCES:
            raise ConfigError(f"confidence {self.confidence!r} unknown for trained exits; "
                              f"choose from {TRAINED_CONFIDENCES}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be ≥ 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be ≥ 1 or unset, got {self.max_steps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if self.pool < 1:
            raise ConfigError(f"pool must be ≥ 1, got {self.pool}")
        for name in ("lr", "backbone_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass
class TrainReport:
    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    planned_steps: int = 0
    stopped_at_deadline: bool = False  # `run_sgd(deadline=...)` cut the run short


def shuffled_batches(data: ImageSplit, batch_size: int, epochs: int, seed: int
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`epochs` passes over `data` in a fresh seeded order each pass."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        yield from batches(data.subset(rng.permutation(len(data))), batch_size, None, False)


def weighted_loss(outputs: Sequence[torch.Tensor], y: torch.Tensor,
                  weights: Sequence[float]) -> torch.Tensor:
    """Σ_n w_n · cross_entropy(outputs[n], y) (terms with weight 0 skipped)."""
    total = outputs[0].new_zeros(())
    for out, w in zip(outputs, weights, strict=True):
        if w:
            total = total + w * F.cross_entropy(out, y)
    return total


def run_sgd(data: ImageSplit, groups: Sequence[tuple[Sequence[nn.Parameter], float]],
            loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, steps: int | None,
            epochs: int = 1, batch_size: int = 64, momentum: float = 0.9,
            weight_decay: float = 5e-4, seed: int = 0, desc: str | None = None,
            progress: bool = True, cosine: bool = False,
            deadline: float | None = None,
            clock: Callable[[], float] = time.perf_counter) -> TrainReport:
    """Plain SGD (one learning rate per parameter group) over shuffled batches.

    `loss_fn(x, y)` runs the model; `steps` (when set) overrides `epochs`.
    `cosine`: each group's learning rate decays as ½(1 + cos πp) to 0, where p is the
    larger of the fraction of steps done and the fraction of the time to `deadline` used.
    `deadline` (a value of `clock`, by default `time.perf_counter`; `time.process_time`
    makes it a CPU-time budget): stop at the first step that starts after it
    (`TrainReport.stopped_at_deadline`).
    """
    opt = torch.optim.SGD([{"params": list(g), "lr": lr} for g, lr in groups],
                          momentum=momentum, weight_decay=weight_decay)
    total = steps if steps is not None else epochs * math.ceil(len(data) / batch_size)
    rep = TrainReport(planned_steps=total)
    t0, c0 = time.perf_counter(), clock()
    bar = progress_bar(total=total, desc=desc, disable=not progress or desc is None, unit="step")
    for x, y in shuffled_batches(data, batch_size, epochs if steps is None else 10**6, seed):
        if rep.steps >= total:
            break
        now = clock()
        if deadline is not None and now >= deadline:
            rep.stopped_at_deadline = True
            break
        if cosine:
            done = rep.steps / max(total, 1)
            if deadline is not None:
                done = max(done, (now - c0) / max(deadline - c0, 1e-9))
            for g, (_, lr) in zip(opt.param_groups, groups, strict=True):
                g["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))
        loss = loss_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rep.steps += 1
        rep.losses.append(float(loss.detach()))
        bar.update()
    bar.close()
    rep.seconds = time.perf_counter() - t0
    return rep


def train_exits(model: EarlyExitModel, data: ImageSplit, cfg: TrainExitsConfig,
                progress: bool = True) -> TrainReport:
    """Train the exit heads (ic-only) or heads and backbone together (joint), in place."""
    n = len(model.exit_indices)
    if n == 0:
        raise ConfigError("the model has no exit heads to train; attach_exits first")
    if cfg.mode == "ic-only":
        model.net.eval()
        model.exits.train()
        for p in model.backbone_parameters():
            p.requires_grad_(False)

        def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return weighted_loss(model.exit_outputs_frozen(x), y, [1.0] * n)
        try:
            return run_sgd(data, [(model.exit_parameters(), cfg.lr)], loss_fn,
                           steps=cfg.max_steps, epochs=cfg.epochs, batch_size=cfg.batch_size,
                           momentum=cfg.momentum, weight_decay=cfg.weight_decay, seed=cfg.seed,
                           desc="train exits (ic-only)", progress=progress)
        finally:
            for p in model.backbone_parameters():
                p.requires_grad_(True)
            model.eval()
    weights = list(cfg.exit_weights) if cfg.exit_weights is not None else [1.0] * n
    if len(weights) != n:
        raise ConfigError(f"{len(weights)} exit weights for {n} exits; give one per exit")
    weights.append(cfg.final_weight)
    model.train()

    def joint_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return weighted_loss(model(x), y, weights)
    try:
        groups = [(model.exit_parameters(), cfg.lr), (model.backbone_parameters(), cfg.backbone_lr)]
        return run_sgd(data, groups, joint_loss, steps=cfg.max_steps, epochs=cfg.epochs,
                       batch_size=cfg.batch_size, momentum=cfg.momentum,
                       weight_decay=cfg.weight_decay, seed=cfg.seed, desc="train exits (joint)",
                       progress=progress)
    finally:
        model.eval()


@torch.no_grad()
def exit_accuracies(model: EarlyExitModel, data: ImageSplit, batch_size: int = 256) -> list[float]:
    """Top-1 accuracy of every exit head, then of the final classifier."""
    model.eval()
    correct = np.zeros(len(model.exit_indices) + 1)
    for x, y in batches(data, batch_size, None, False):
        for j, out in enumerate(model(x)):
            correct[j] += int((out.argmax(1) == y).sum())
    return (correct / max(len(data), 1)).tolist()


def to_exit_heads(model: EarlyExitModel, confidence: str = "max_softmax"
                  ) -> list[ExitHead | None]:
    """One exportable `ExitHead` per exit point (None where no classifier), thresholds +inf."""
    if confidence not in CONFIDENCE_CLASSES:
        raise ConfigError(f"confidence {confidence!r} unknown; choose from {sorted(CONFIDENCE_CLASSES)}")
    heads: list[ExitHead | None] = [None] * model.net.num_exits
    for i in model.exit_indices:
        clf: ExitClassifier = model.exits[str(i)]  # type: ignore[assignment]
        w, b = clf.linear.weight.detach().clone(), clf.linear.bias.detach().clone()
        heads[i] = ExitHead(FeatureTransform(clf.pool), TrainedScorer(w, b), confidence).eval()
    return heads


def calibrate_heads(net: ExitNet, heads: Sequence[ExitHead | None], calib: ImageSplit,
                    max_drop: float = 0.01, budget: float | None = None,
                    batch_size: int = 256, progress: bool = False):  # -> FittedExits
    """Thresholds for already-built heads (trained or combined) on a calibration split.

    Scores `calib` once, builds the cost table and the `ExitTable`, and runs the same greedy
    threshold search as `edge_ee.pipeline.fit_exits`; the thresholds are set in the heads.
    """
    from edge_ee.cost import cost_table
    from edge_ee.exits.fit import score_split
    from edge_ee.pipeline import FitConfig, FittedExits, choose_thresholds, table_for

    t0 = time.perf_counter()
    (scores,) = score_split(net, [list(heads)], calib, batch_size, progress, "calibration scores")
    costs = cost_table(net, heads)
    fitted = FittedExits(list(heads), costs, table_for(heads, scores, costs),
                         time.perf_counter() - t0, [])
    choose_thresholds(fitted, FitConfig(max_drop=max_drop, budget=budget), progress)
    return fitted
