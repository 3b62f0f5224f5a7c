"""The evaluation harness: score with every method, retrain from scratch on what each keeps.

Protocol (METHODS.md §4):
* every scorer scores the full training set once (its wall time, CPU time and energy are
  measured); the keep set for each ratio follows from the scores;
* a fresh model (seeded, the same architecture) is trained from scratch on each kept
  set for `train_epochs` epochs of that set. Methods are compared at an **equal number
  of samples trained on**: at a given ratio every method keeps the same number of
  samples and trains the same epochs, i.e. the same optimizer steps
  (epochs × kept size / batch size);
* D_p check: EEPrune's discarded set at `dp_ratio` is trained on the same way;
* exit-location ablation: EEPrune scored with its exit before / middle / after;
* two readings of the ratio for the scorers in `class_balanced` (default EEPrune): over
  the whole set, and class-balanced (method label `<scorer>+cb`);
* a full-data run per seed gives the unpruned reference and the cost of one full training
  run that scorer costs are compared with.
Every finished training run is appended to `runs.jsonl` at once (a rerun skips what is
already there), so a run stopped early still leaves its evidence.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_ee.data import ImageSplit, load_cifar10_jpeg, load_fashion_mnist
from edge_ee.dataprune.config import PruneDataConfig
from edge_ee.dataprune.cost import measure
from edge_ee.dataprune.keepfile import KeepFile, dataset_sha256, write_keep_file
from edge_ee.dataprune.models import LOCATIONS, exit_point, get_factory
from edge_ee.dataprune.scorers import ScoreBudget, ScoreResult, get_scorer, to_keep_file
from edge_ee.dataprune.training import TrainConfig, accuracy, fit

log = logging.getLogger(__name__)


def balanced_subset(data: ImageSplit, per_class: int | None, seed: int) -> ImageSplit:
    """A seeded random `per_class` samples of every class (never the first n), in index order."""
    if per_class is None:
        return data
    rng = np.random.default_rng(seed)
    idx = []
    for k in range(len(data.classes)):
        members = np.flatnonzero(data.labels == k)
        idx.append(rng.choice(members, min(per_class, len(members)), replace=False))
    return data.subset(np.sort(np.concatenate(idx)))


def load_data(cfg: PruneDataConfig) -> tuple[ImageSplit, ImageSplit]:
    """(train, test) of the configured data set, class-balanced subsets when asked."""
    if cfg.dataset == "fashion-mnist":
        train, test = load_fashion_mnist("train", cfg.data), load_fashion_mnist("test", cfg.data)
    else:
        train, test = load_cifar10_jpeg("train", cfg.data), load_cifar10_jpeg("test", cfg.data)
    return (balanced_subset(train, cfg.train_per_class, 1234),
            balanced_subset(test, cfg.test_per_class, 4321))


def budget_for(cfg: PruneDataConfig, scorer: str, exit: str | int | None = None) -> ScoreBudget:
    epochs = {"eeprune": cfg.score_epochs, "el2n": cfg.el2n_epochs,
              "forgetting": cfg.forgetting_epochs or cfg.train_epochs}.get(scorer, 1.0)
    return ScoreBudget(epochs=epochs, seeds=cfg.el2n_seeds if scorer == "el2n" else 1,
                       exit=cfg.exit if exit is None else exit, pool=cfg.pool,
                       batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                       schedule=cfg.score_schedule)


def score_with_cost(cfg: PruneDataConfig, train: ImageSplit, scorer: str,
                    exit: str | int | None = None) -> tuple[ScoreResult, dict[str, Any]]:
    """Score `train` with one method, measuring wall/CPU time and (estimated) energy."""
    budget = budget_for(cfg, scorer, exit)
    return measure(lambda: get_scorer(scorer).score(train, cfg.model, budget, cfg.num_classes,
                                                    cfg.progress),
                   cfg.profile, cfg.power_source)


def per_class_discard(train: ImageSplit, keep: KeepFile) -> list[float]:
    """Fraction of each class's samples that were discarded."""
    disc = ~keep.keep_mask
    return [float(disc[train.labels == k].mean()) for k in range(len(train.classes))]


@dataclass
class Evaluation:
    """Everything the report needs."""

    dataset: str
    classes: tuple[str, ...]
    n_train: int
    n_test: int
    config: dict[str, Any]
    scorer_costs: dict[str, dict[str, Any]] = field(default_factory=dict)
    scorer_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    discard_per_class: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)


def _train_eval(cfg: PruneDataConfig, train: ImageSplit, test: ImageSplit, seed: int,
                desc: str) -> dict[str, Any]:
    k = cfg.num_classes or len(train.classes)
    model = get_factory(cfg.model)(train.images.shape[-1], k, seed)
    tcfg = TrainConfig(cfg.train_epochs, cfg.batch_size, cfg.lr, seed=seed)
    cpu0 = time.process_time()
    wall = fit(model, train, tcfg, desc=desc, progress=cfg.progress)
    return {"test_accuracy": accuracy(model, test), "train_wall_s": wall,
            "train_cpu_s": time.process_time() - cpu0,
            "n_train": len(train), "steps": tcfg.steps(len(train))}


def run_evaluation(cfg: PruneDataConfig) -> Evaluation:
    """The whole protocol; writes keep files and `runs.jsonl` under `cfg.out`."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test = load_data(cfg)
    sha = dataset_sha256(train)
    ev = Evaluation(cfg.dataset, train.classes, len(train), len(test),
                    {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in vars(cfg).items()})
    log_path = out / "runs.jsonl"
    done = {}
    if log_path.is_file():
        for line in log_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["key"]] = row
    cost_path = out / "scorers.json"
    cached = json.loads(cost_path.read_text()) if cost_path.is_file() else {}

    # 1. scoring: every method once (+ eeprune at the other exit locations)
    jobs = [(s, None) for s in cfg.scorers]
    if cfg.exit_ablation and "eeprune" in cfg.scorers:
        main = exit_point(cfg.model, cfg.exit)
        jobs += [("eeprune", loc) for loc in LOCATIONS if exit_point(cfg.model, loc) != main]
    keeps: dict[tuple[str, float], KeepFile] = {}
    for scorer, loc in jobs:
        label = scorer if loc is None else f"eeprune@{loc}"
        score_file = out / "scores" / f"{label}.npy"
        if label in cached and score_file.is_file():
            res = ScoreResult(np.load(score_file), cached[label]["meta"])
            cost = cached[label]["cost"]
        else:
            log.info("scoring with %s", label)
            res, cost = score_with_cost(cfg, train, scorer, loc)
            score_file.parent.mkdir(exist_ok=True)
            np.save(score_file, res.scores)
            cached[label] = {"meta": res.meta, "cost": cost}
            cost_path.write_text(json.dumps(cached, indent=1, default=str))
        ev.scorer_costs[label], ev.scorer_meta[label] = cost, res.meta
        ratios = set(cfg.ratios)
        if scorer == "eeprune":
            ratios |= {cfg.dp_ratio} if cfg.dp_check else set()
            ratios |= {cfg.ablation_ratio} if cfg.exit_ablation else set()
        ev.discard_per_class[label] = {}
        for r in sorted(ratios):
            if loc is not None and r != cfg.ablation_ratio:
                continue
            balanced = [False, True] if loc is None and scorer in cfg.class_balanced else [False]
            for cb in balanced:
                name = f"{label}+cb" if cb else label
                if cb and r not in cfg.ratios:
                    continue
                kf = to_keep_file(scorer, train, res, r, cfg.model,
                                  budget_for(cfg, scorer, loc), sha, class_balanced=cb)
                keeps[(name, r)] = kf
                ev.discard_per_class.setdefault(name, {})[str(r)] = per_class_discard(train, kf)
                write_keep_file(kf, out / "keep" / f"{name}-r{round(r * 100)}.json")
                if scorer == "eeprune":
                    ev.scorer_meta[f"{name}@{r}"] = kf.provenance["meta"]

    # 2. training from scratch, seeds outermost so every seed's picture completes in turn
    order = sorted(cfg.ratios, key=lambda r: abs(r - 0.5))
    with log_path.open("a") as logf:
        listed: set[str] = set()

        def run(key: str, data: ImageSplit, **row: Any) -> None:
            if key in listed:
                return
            listed.add(key)
            if key in done:
                ev.runs.append(done[key])
                return
            res = _train_eval(cfg, data, test, row["seed"], key)
            rec = {"key": key, "dataset": cfg.dataset, **row, **res}
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            done[key] = rec
            ev.runs.append(rec)
            log.info("%s: test accuracy %.4f", key, res["test_accuracy"])

        for seed in cfg.seeds:
            run(f"full/s{seed}", train, method="full", ratio=0.0, seed=seed, subset="all")
            for r in order:
                for scorer in cfg.scorers:
                    kf = keeps[(scorer, r)]
                    run(f"{scorer}/r{r}/s{seed}", kf.subset(train, sha), method=scorer, ratio=r,
                        seed=seed, subset="kept")
                for scorer in cfg.class_balanced:
                    if scorer in cfg.scorers:
                        name = f"{scorer}+cb"
                        run(f"{name}/r{r}/s{seed}", keeps[(name, r)].subset(train, sha),
                            method=name, ratio=r, seed=seed, subset="kept")
            if cfg.dp_check and "eeprune" in cfg.scorers:
                kf = keeps[("eeprune", cfg.dp_ratio)]
                run(f"eeprune-Dp/r{cfg.dp_ratio}/s{seed}", kf.discarded_subset(train, sha),
                    method="eeprune", ratio=cfg.dp_ratio, seed=seed, subset="discarded")
            if cfg.exit_ablation and "eeprune" in cfg.scorers:
                r = cfg.ablation_ratio
                run(f"eeprune/r{r}/s{seed}", keeps[("eeprune", r)].subset(train, sha),
                    method="eeprune", ratio=r, seed=seed, subset="kept")
            for label, r in keeps:
                if label.startswith("eeprune@"):
                    run(f"{label}/r{r}/s{seed}", keeps[(label, r)].subset(train, sha),
                        method=label, ratio=r, seed=seed, subset="kept")
    return ev
