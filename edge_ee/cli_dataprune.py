"""`edge-ee prune-data`: dataset pruning with an early-exit network (EEPrune) and baselines.

  edge-ee prune-data --scorer eeprune --ratio 0.5 --keep-out keep.json      # score once
  edge-ee prune-data --evaluate --ratios 0.3,0.5,0.7 --seeds 0,1,2 --out report/
  edge-ee prune-data --check-keep keep.json                                 # verify a keep file

Every flag maps 1:1 to a field of `PruneDataConfig` (edge_ee/dataprune/config.py);
`--recipe FILE.yaml` gives the same keys, flags win, an unknown key is an error naming the
valid ones. Scoring writes a keep file (kept/discarded indices, scores, provenance, data
sha256) that `edge_ee.dataprune.read_keep_file(...).subset(data)` applies in training
code; `--evaluate` trains fresh models on what every scorer keeps and writes the report.
No torch at import: the handler imports it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_ee.cli_training import _flag, build, config_defaults, read_recipe
from edge_ee.errors import ConfigError

TUPLES = {"scorers": str, "ratios": float, "seeds": int, "class_balanced": str}
BOOLS = ("evaluate", "dp_check", "exit_ablation", "progress")


def register(subparsers: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    p = subparsers.add_parser("prune-data", help="dataset pruning with an early-exit network "
                              "(EEPrune) against random, EL2N and forgetting")
    p.add_argument("--recipe", default=None, help="YAML file with config keys (flags win)")
    _flag(p, "check_keep", help="verify that this keep file belongs to the data, print its summary")
    _flag(p, "dataset", choices=("fashion-mnist", "cifar10"), help="which dataset to prune")
    _flag(p, "data", help="Fashion-MNIST folder or CIFAR-10 JPEG zip (default: shared data)")
    _flag(p, "train_per_class", int, help="class-balanced random subset of the train split")
    _flag(p, "test_per_class", int, help="class-balanced random subset of the test split")
    _flag(p, "model", help="compact-cnn | mlp | small-cnn")
    _flag(p, "num_classes", int, help="the model's classes (default: the data's)")
    _flag(p, "scorer", help="eeprune | random | el2n | forgetting")
    _flag(p, "ratio", float, help="fraction of training samples discarded, in [0, 1)")
    _flag(p, "exit", help="EEPrune exit: before | middle | after | an exit index")
    _flag(p, "pool", int, help="EEPrune: average-pooling size before the exit head")
    _flag(p, "score_epochs", float, help="EEPrune's few-epoch training (fractions allowed)")
    _flag(p, "score_schedule", choices=("one-cycle", "constant"),
          help="EEPrune's training schedule (constant = train_exits' plain SGD)")
    _flag(p, "el2n_epochs", float, help="EL2N: epochs trained before scoring")
    _flag(p, "el2n_seeds", int, help="EL2N: scores averaged over this many seeds")
    _flag(p, "forgetting_epochs", float,
          help="forgetting: epochs counted (default: none, i.e. --train-epochs)")
    _flag(p, "train_epochs", float, help="epochs of one full training run / evaluation run")
    _flag(p, "batch_size", int, help="training batch size")
    _flag(p, "lr", float, help="training learning rate")
    _flag(p, "seed", int, help="random seed (subsets, scoring, training)")
    _flag(p, "keep_out", help="keep file to write (scoring mode)")
    _flag(p, "scorers", help="--evaluate: comma-separated scorers")
    _flag(p, "ratios", help="--evaluate: comma-separated pruning ratios")
    _flag(p, "seeds", help="--evaluate: comma-separated training seeds")
    _flag(p, "class_balanced", help="--evaluate: scorers also evaluated class-balanced "
          "(each class loses the same fraction; default eeprune; '' for none)")
    _flag(p, "dp_ratio", float, help="--dp-check: pruning ratio whose discarded set D_p is trained on")
    _flag(p, "ablation_ratio", float, help="--exit-ablation: pruning ratio of the exit-location runs")
    _flag(p, "out", help="report folder (--evaluate)")
    _flag(p, "threads", int, help="torch threads")
    _flag(p, "profile", help="hardware profile for (estimated) energy")
    _flag(p, "power_source", help="power source for the energy figures (as in edge-ee-run)")
    bool_help = {"evaluate": "train fresh models on what each scorer keeps; write the report",
                 "dp_check": "--evaluate: also train on the discarded set D_p at --dp-ratio",
                 "exit_ablation": "--evaluate: EEPrune at before / middle / after exits",
                 "progress": "progress lines while training"}
    for name in BOOLS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, help=bool_help[name],
                       action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
    config_defaults(p, ("", ("edge_ee.dataprune.config", "PruneDataConfig")))
    return {"prune-data": cmd_prune_data}


def make_config(a: argparse.Namespace):  # -> PruneDataConfig
    from edge_ee.dataprune.config import PruneDataConfig
    from edge_ee.dataprune.models import exit_point

    merged = {**read_recipe(a.recipe),
              **{k: v for k, v in vars(a).items() if k not in ("command", "recipe")}}
    for key, typ in TUPLES.items():
        v = merged.get(key)
        if isinstance(v, str):
            v = [s for s in v.split(",") if s.strip()]
        if isinstance(v, (list, tuple)):
            try:
                merged[key] = tuple(typ(s.strip() if isinstance(s, str) else s) for s in v)
            except ValueError as err:
                raise ConfigError(f"prune-data: {key} must be a list of {typ.__name__}: {err}") from err
    if "exit" in merged:
        merged["exit"] = str(merged["exit"])
    cfg = build(PruneDataConfig, merged, "prune-data")
    exit_point(cfg.model, cfg.exit)  # an exit that does not exist fails before any work
    return cfg


def cmd_prune_data(a: argparse.Namespace) -> int:
    cfg = make_config(a)
    import torch

    from edge_ee.dataprune.harness import budget_for, load_data, per_class_discard, score_with_cost
    from edge_ee.dataprune.keepfile import dataset_sha256, read_keep_file, write_keep_file
    from edge_ee.dataprune.scorers import to_keep_file

    torch.set_num_threads(cfg.threads)
    if cfg.check_keep:
        keep = read_keep_file(cfg.check_keep)
        train, _ = load_data(cfg)
        keep.check(train)
        print(f"{cfg.check_keep}: matches the data ({keep.n} samples, {len(keep.kept)} kept, "
              f"{keep.n - len(keep.kept)} discarded; scorer {keep.provenance.get('scorer')})")
        return 0
    if cfg.evaluate:
        from edge_ee.dataprune.harness import run_evaluation
        from edge_ee.dataprune.report import write_report

        path = write_report(run_evaluation(cfg), cfg.out)
        print(path.read_text())
        print(f"wrote {path} and {path.with_suffix('.html')}", file=sys.stderr)
        return 0
    train, _ = load_data(cfg)
    res, cost = score_with_cost(cfg, train, cfg.scorer)
    keep = to_keep_file(cfg.scorer, train, res, cfg.ratio, cfg.model,
                        budget_for(cfg, cfg.scorer), dataset_sha256(train))
    out = Path(cfg.keep_out or Path(cfg.out) / f"keep-{cfg.scorer}-r{round(cfg.ratio * 100)}.json")
    write_keep_file(keep, out)
    summary = {"keep_file": str(out), "scorer": cfg.scorer, "ratio": cfg.ratio,
               "kept": len(keep.kept), "discarded": keep.n - len(keep.kept),
               "discarded_per_class": dict(zip(train.classes, per_class_discard(train, keep),
                                               strict=True)),
               "meta": keep.provenance["meta"], "cost": cost}
    print(json.dumps(summary, indent=1, default=str))
    print(f"wrote {out} ({'estimated ' if cost['energy_estimated'] else ''}energy "
          f"{cost['energy_mj'] or 0:.0f} mJ, {cost['wall_s']:.1f} s)", file=sys.stderr)
    return 0

