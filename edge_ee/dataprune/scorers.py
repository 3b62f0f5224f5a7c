"""Data-pruning scorers behind one interface, registered by name.

A scorer takes a training set, a model factory name and a `ScoreBudget` and returns a
score per sample (higher = more worth keeping); `keep_indices(scores, ratio)` turns
scores into the kept set for a pruning ratio, and `Scorer.prune` does both and returns a
`KeepFile`. One scoring serves every ratio (the ranking does not depend on it).

* `eeprune` (Görmez, ACM TIST): train a fresh early-exit network (one linear exit at the
  chosen location, `edge_ee.exits.trained`'s model and joint loss Σ CE(exit) + CE(final))
  for a few epochs (`budget.epochs`, fractions allowed), on the one-cycle schedule all
  other runs use (`schedule="constant"`: `train_exits`' plain SGD). A sample may be discarded when the
  early exit is correct, the final exit is correct (no overthinking) and the early exit
  is confident. **Our choice** (the paper's way of reaching an exact ratio is not
  public): samples meeting the first two conditions are ranked by early-exit max-softmax
  and the most confident are discarded first; only when they run out (a ratio above the
  fraction that both exits get right) are the others discarded, those to whose true
  class the early exit gives the most probability first. The confidence of the last
  discarded candidate is the implied threshold (reported per ratio).
* `random`: uniform random scores (seeded).
* `el2n` (Paul et al. 2021): ‖softmax(f(x)) − onehot(y)‖₂ after `budget.epochs` of
  training, averaged over `budget.seeds` independently initialised models.
* `forgetting` (Toneva et al. 2019): forgetting events (correct → wrong between two
  presentations in training, judged on the minibatch before the update) over a full run
  of `budget.epochs`; never-learned samples count as forgotten most.
GraNd is not offered: on these budgets it needs per-sample gradients of the whole
network, which costs more than the methods it is meant to be cheaper than.
Ties are broken by a seeded random order, so equal scores never follow class order.
Two readings of "discard the lowest-scored ratio": over the whole set (the papers), or
class-balanced (`keep_indices(..., labels=...)`: each class loses the same fraction);
the harness evaluates both for the scorers listed in `class_balanced`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from edge_ee.data import ImageSplit, check_labels
from edge_ee.dataprune.keepfile import KeepFile, dataset_sha256
from edge_ee.dataprune.models import exit_point, get_factory, to_exitnet
from edge_ee.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SCHEDULES = ("one-cycle", "constant")


@dataclass(frozen=True)
class ScoreBudget:
    """What a scorer may spend, and the knobs of its model."""

    epochs: float = 0.5  # training epochs (eeprune: few; el2n: early; forgetting: the full run)
    seeds: int = 1  # el2n: models averaged
    exit: str | int = "middle"  # eeprune: before | middle | after | exit index
    pool: int = 2  # eeprune: exit head pools the feature to pool×pool
    batch_size: int = 128
    lr: float = 0.1
    seed: int = 0
    schedule: str = "one-cycle"  # eeprune: one-cycle (as every other run) | constant (train_exits)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule {self.schedule!r} unknown; choose from {SCHEDULES}")
        if not self.epochs > 0:
            raise ConfigError(f"scoring epochs must be > 0, got {self.epochs}")
        if self.seeds < 1:
            raise ConfigError(f"seeds must be ≥ 1, got {self.seeds}")
        if self.pool < 1:
            raise ConfigError(f"pool must be ≥ 1, got {self.pool}")


@dataclass
class ScoreResult:
    scores: np.ndarray  # (N,) higher = keep
    meta: dict[str, Any]


def check_ratio(ratio: float) -> float:
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"pruning ratio {ratio} is outside [0, 1): it is the fraction of "
                          "training samples discarded, e.g. 0.5")
    return float(ratio)


def check_data(data: ImageSplit, num_classes: int) -> None:
    """Labels must match the model's classes (count and range)."""
    if len(data) == 0:
        raise DataError("the training set is empty; nothing to score")
    if len(data.classes) != num_classes:
        raise DataError(f"the data has {len(data.classes)} classes but the model "
                        f"{num_classes}; set num_classes to {len(data.classes)}")
    check_labels(data.labels, num_classes, "training labels")


def keep_indices(scores: np.ndarray, ratio: float, seed: int = 0,
                 labels: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of the kept samples: discard the round(ratio·N) lowest scores.

    With `labels` (class-balanced reading), every class loses the same fraction: the
    lowest-scored round(ratio·N_k) of class k, quotas rounded by largest remainder so the
    total is still exactly round(ratio·N).
    """
    check_ratio(ratio)
    n = len(scores)
    tiebreak = np.random.default_rng(seed).random(n)
    order = np.lexsort((tiebreak, scores))  # ascending score, random among ties
    total = round(ratio * n)
    if labels is None:
        return np.sort(order[total:])
    classes, counts = np.unique(labels, return_counts=True)
    want = ratio * counts
    quota = np.floor(want).astype(int)
    extra = total - quota.sum()
    quota[np.argsort(-(want - quota), kind="stable")[:extra]] += 1
    drop = []
    for k, q in zip(classes, quota, strict=True):
        members = order[labels[order] == k]  # class k, ascending score
        drop.append(members[:q])
    mask = np.ones(n, bool)
    mask[np.concatenate(drop)] = False
    return np.flatnonzero(mask)


class Scorer:
    """Interface: `score(data, model, budget, num_classes)` → per-sample scores."""

    name: ClassVar[str] = ""

    def score(self, data: ImageSplit, model: str, budget: ScoreBudget,
              num_classes: int | None = None, progress: bool = True) -> ScoreResult:
        raise NotImplementedError

    def prune(self, data: ImageSplit, model: str, ratio: float, budget: ScoreBudget,
              num_classes: int | None = None, progress: bool = True) -> KeepFile:
        """Score `data` and keep the (1 − ratio) highest-scored samples."""
        check_ratio(ratio)
        res = self.score(data, model, budget, num_classes, progress)
        return to_keep_file(self.name, data, res, ratio, model, budget)


def to_keep_file(name: str, data: ImageSplit, res: ScoreResult, ratio: float, model: str,
                 budget: ScoreBudget, data_sha256: str | None = None,
                 class_balanced: bool = False) -> KeepFile:
    kept = keep_indices(res.scores, ratio, budget.seed, data.labels if class_balanced else None)
    meta = dict(res.meta, class_balanced=class_balanced)
    if name == "eeprune":
        meta.update(eeprune_ratio_meta(res, kept))
    prov = {"scorer": name, "ratio": ratio, "seed": budget.seed, "epochs": budget.epochs,
            "model": model, "budget": {k: getattr(budget, k) for k in budget.__dataclass_fields__},
            "meta": meta}
    return KeepFile(kept, res.scores, data_sha256 or dataset_sha256(data), prov)


def eeprune_ratio_meta(res: ScoreResult, kept: np.ndarray) -> dict[str, Any]:
    """Implied confidence threshold and how many discarded samples break a condition."""
    mask = np.ones(len(res.scores), bool)
    mask[kept] = False
    cand = res.scores < 1.0
    conf = 1.0 - res.scores  # early-exit max-softmax, meaningful for candidates only
    disc = np.flatnonzero(mask)
    disc_cand = disc[cand[disc]]
    return {"implied_threshold": float(conf[disc_cand].min()) if disc_cand.size else None,
            "discarded_not_meeting_conditions": int((~cand[disc]).sum())}


SCORERS: dict[str, type[Scorer]] = {}


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    SCORERS[cls.name] = cls
    return cls


def get_scorer(name: str) -> Scorer:
    if name not in SCORERS:
        raise ConfigError(f"unknown scorer {name!r}; valid scorers: {', '.join(sorted(SCORERS))}")
    return SCORERS[name]()


def _fresh(data: ImageSplit, model: str, num_classes: int | None, seed: int):
    k = num_classes if num_classes is not None else len(data.classes)
    check_data(data, k)
    return get_factory(model)(data.images.shape[-1], k, seed), k


@register_scorer
class RandomScorer(Scorer):
    name = "random"

    def score(self, data, model, budget, num_classes=None, progress=True):
        check_data(data, num_classes if num_classes is not None else len(data.classes))
        return ScoreResult(np.random.default_rng(budget.seed + 7919).random(len(data)), {})


@register_scorer
class EL2NScorer(Scorer):
    name = "el2n"

    def score(self, data, model, budget, num_classes=None, progress=True):
        from edge_ee.dataprune.training import TrainConfig, fit, predict
        total = np.zeros(len(data))
        accs = []
        for s in range(budget.seeds):
            net, k = _fresh(data, model, num_classes, budget.seed + 1000 * s)
            cfg = TrainConfig(budget.epochs, budget.batch_size, budget.lr, seed=budget.seed + 1000 * s)
            fit(net, data, cfg, desc=f"el2n model {s + 1}/{budget.seeds}", progress=progress)
            probs = predict(net, data)[0]
            onehot = np.eye(k)[data.labels]
            total += np.linalg.norm(probs - onehot, axis=1)
            accs.append(float((probs.argmax(1) == data.labels).mean()))
        return ScoreResult(total / budget.seeds, {"train_accuracy_per_seed": accs})


@register_scorer
class ForgettingScorer(Scorer):
    name = "forgetting"

    def score(self, data, model, budget, num_classes=None, progress=True):
        from edge_ee.dataprune.training import TrainConfig, fit
        net, _ = _fresh(data, model, num_classes, budget.seed)
        n = len(data)
        prev = np.zeros(n, bool)
        learned = np.zeros(n, bool)
        events = np.zeros(n, np.int64)

        def hook(idx, logits, y):
            correct = (logits.argmax(1) == y).numpy()
            events[idx] += (prev[idx] & ~correct)
            prev[idx] = correct
            learned[idx] |= correct

        cfg = TrainConfig(budget.epochs, budget.batch_size, budget.lr, seed=budget.seed)
        fit(net, data, cfg, on_batch=hook, desc="forgetting run", progress=progress)
        scores = events.astype(np.float64)
        scores[~learned] = scores.max() + 1.0
        return ScoreResult(scores, {"never_learned": int((~learned).sum()),
                                    "unforgettable": int((learned & (events == 0)).sum())})


@register_scorer
class EEPruneScorer(Scorer):
    name = "eeprune"

    def score(self, data, model, budget, num_classes=None, progress=True):
        from edge_ee.dataprune.training import TrainConfig, fit, predict
        from edge_ee.exits.trained import (
            TrainExitsConfig,
            attach_exits,
            train_exits,
            weighted_loss,
        )

        idx = exit_point(model, budget.exit)
        seq, _ = _fresh(data, model, num_classes, budget.seed)
        _, h, w, c = data.images.shape
        net = to_exitnet(seq, (c, h, w), model)
        ee = attach_exits(net, [idx], budget.pool, budget.seed)
        tcfg = TrainConfig(budget.epochs, budget.batch_size, budget.lr, seed=budget.seed)
        steps = tcfg.steps(len(data))
        if budget.schedule == "constant":  # train_exits' joint mode: plain SGD, constant lr
            cfg = TrainExitsConfig(mode="joint", exits=(idx,), pool=budget.pool, epochs=1,
                                   max_steps=steps, batch_size=budget.batch_size, lr=budget.lr,
                                   backbone_lr=budget.lr, seed=budget.seed)
            train_exits(ee, data, cfg, progress=progress)
        else:  # the same joint loss on the one-cycle schedule every other run here uses
            def joint(m, x, y):
                outs = m(x)
                return weighted_loss(outs, y, [1.0] * len(outs)), outs[-1]
            fit(ee, data, tcfg, loss_fn=joint, desc="eeprune early-exit training",
                progress=progress)
        early, final = predict(ee, data)
        y = data.labels
        early_ok = early.argmax(1) == y
        final_ok = final.argmax(1) == y
        conf = early.max(1)
        cand = early_ok & final_ok
        p_true = early[np.arange(len(y)), y]  # = conf where the early exit is correct
        scores = np.where(cand, 1.0 - conf, 2.0 - p_true)
        log.info("eeprune: exit %d, early acc %.3f, final acc %.3f, %d candidates", idx,
                 early_ok.mean(), final_ok.mean(), cand.sum())
        return ScoreResult(scores, {
            "exit_index": idx, "exit_location": str(budget.exit), "train_steps": steps,
            "schedule": budget.schedule,
            "early_train_accuracy": float(early_ok.mean()),
            "final_train_accuracy": float(final_ok.mean()),
            "candidates": int(cand.sum()), "candidate_fraction": float(cand.mean()),
            "early_confidence_median": float(np.median(conf))})
