"""`edge-ee train-exits` and `edge-ee prune`: trained exit heads and pruning early-exit networks.

  edge-ee train-exits --model fashion-cnn --mode ic-only --epochs 1 --out bundle/
  edge-ee prune --model fashion-cnn --method structured --schedule both --ratio 0.3 --plot s.png
  edge-ee train-exits --model r20.npz --exits-file r20-exits.pt   # keep the trained heads
  edge-ee prune --model r20.npz --exits-file r20-exits.pt --method structured --ratio 0.5 \
      --recovery distill --recover-epochs 1 --budget-min 15       # reuse them, recover, warn

Every flag maps 1:1 to a field of a frozen config dataclass: `JobConfig` (below: model,
data, subsets, calibration, output), `TrainExitsConfig` (edge_ee/exits/trained.py) and,
for `prune`, `PruneConfig` (edge_ee/pruning/config.py; `--schedule both` runs both
schedules and plots their per-layer sparsity). `--recipe FILE.yaml` gives the same keys
(prune: exit-training keys under `train_exits:`); flags given on the command line win;
an unknown key is an error naming it. No torch at import: handlers import it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_runners.argtypes import DefaultsHelpFormatter
from edge_ee.errors import ConfigError

TUPLE_FIELDS = {"exits": int, "exit_weights": float, "ignore_layers": str}


@dataclass(frozen=True)
class JobConfig:
    """What a training/pruning job runs on and writes."""

    model: str = "fashion-cnn"  # 'fashion-cnn' or a CIFAR ResNet .npz
    data: str | None = None
    train_subset: int | None = None  # seeded subset of the training split (quick runs)
    test_subset: int | None = None
    calib_fraction: float = 0.1  # held out of the training split for thresholds
    max_drop: float = 0.01
    out: str | None = None  # bundle folder (prune --schedule both: one per schedule inside)
    overwrite: bool = False
    report: str | None = None  # JSON file with accuracies, FLOPs, sparsity
    plot: str | None = None  # prune: per-layer sparsity figure (PNG)
    exits_file: str | None = None  # trained exits: train-exits writes it, prune reuses it

    def __post_init__(self) -> None:
        if not 0.0 < self.calib_fraction < 1.0:
            raise ConfigError(f"calib_fraction must be in (0, 1), got {self.calib_fraction}")
        for name in ("train_subset", "test_subset"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name} must be ≥ 1 or unset, got {v}")


def _flag(p: argparse.ArgumentParser, name: str, typ: Any = str, **kw: Any) -> None:
    p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ,
                   default=argparse.SUPPRESS, **kw)


#: config dataclasses whose fields give the flags' defaults: (module, class)
JOB = ("edge_ee.cli_training", "JobConfig")
TRAIN = ("edge_ee.exits.trained", "TrainExitsConfig")
PRUNE = ("edge_ee.pruning.config", "PruneConfig")


class ConfigDefaultsFormatter(DefaultsHelpFormatter):
    """`--help` for flags whose default is a config dataclass field (the flag itself defaults
    to SUPPRESS so a recipe can give the value): the field's default, looked up only when
    help is shown (the configs' modules import torch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        sources = getattr(action, "config_sources", None)
        if not sources or action.default is not argparse.SUPPRESS or "default" in text.lower():
            return super()._get_help_string(action)
        import importlib
        for module, cls, name in sources:
            fields = {f.name: f for f in dataclasses.fields(
                getattr(importlib.import_module(module), cls))}
            if name in fields:
                f = fields[name]
                v = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                shown = ("none" if v is None or v == () else
                         ",".join(map(str, v)) if isinstance(v, tuple) else str(v))
                return f"{text} (default: {shown})".replace("%", "%%")
        return text


def config_defaults(p: argparse.ArgumentParser, *sources: tuple[str, tuple[str, str]]) -> None:
    """Let `--help` show each SUPPRESS flag's default from the first of `sources`
    ((dest prefix, (module, class)) pairs) that has the field."""
    p.formatter_class = ConfigDefaultsFormatter
    for a in p._actions:
        if a.option_strings and a.default is argparse.SUPPRESS and a.dest != "help":
            a.config_sources = [(mod, cls, a.dest[len(prefix):])  # type: ignore[attr-defined]
                                for prefix, (mod, cls) in sources if a.dest.startswith(prefix)]


def _job_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default=None, help="YAML file with config keys (flags win)")
    _flag(p, "model", help="'fashion-cnn' or a CIFAR ResNet .npz (default fashion-cnn)")
    _flag(p, "data", help="Fashion-MNIST folder or CIFAR-10 JPEG zip (default: shared data)")
    _flag(p, "train_subset", int, help="seeded subset of the training split")
    _flag(p, "test_subset", int, help="seeded subset of the test split")
    _flag(p, "calib_fraction", float,
          help="fraction of the training split held out to calibrate thresholds")
    _flag(p, "max_drop", float, help="accuracy drop allowed when choosing thresholds")
    _flag(p, "out", help="bundle folder to export")
    p.add_argument("--overwrite", dest="overwrite", action="store_true", default=argparse.SUPPRESS,
                   help="replace an existing bundle at --out")
    _flag(p, "report", help="JSON report file")
    _flag(p, "exits_file", help="trained exit heads (.pt + .sha256): train-exits writes them "
          "there, prune reuses them instead of training new exits (default: none)")


def _train_flags(p: argparse.ArgumentParser, prefix: str = "") -> None:
    _flag(p, f"{prefix}mode", choices=("ic-only", "joint"),
          help="exit training: ic-only (SDN, backbone frozen) or joint (BranchyNet)")
    _flag(p, f"{prefix}exits", help="comma-separated exit points that get a head (default all)")
    _flag(p, f"{prefix}pool", int, help="average-pooling size before each linear exit head")
    _flag(p, f"{prefix}epochs", int, help="epochs of exit training")
    _flag(p, f"{prefix}max_steps", int, help="stop exit training after this many SGD steps")
    if not prefix:
        _flag(p, "batch_size", int, help="training batch size")
        _flag(p, "lr", float, help="learning rate of the exit heads")
        _flag(p, "backbone_lr", float, help="joint: learning rate of the backbone")
        _flag(p, "momentum", float, help="SGD momentum")
        _flag(p, "weight_decay", float, help="SGD weight decay")
        _flag(p, "exit_weights", help="joint: comma-separated loss weight per exit (default: 1 each)")
        _flag(p, "final_weight", float, help="joint: loss weight of the final classifier")
        _flag(p, "confidence", choices=("max_softmax", "entropy"),
              help="exit confidence the thresholds apply to")
        _flag(p, "seed", int, help="random seed (subsets, head init, batches)")


def register(subparsers: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    t = subparsers.add_parser("train-exits", help="train linear exit heads (SDN ic-only or "
                              "BranchyNet joint), calibrate, export a bundle")
    _job_flags(t)
    _train_flags(t)
    config_defaults(t, ("", JOB), ("", TRAIN))
    p = subparsers.add_parser("prune", help="train exits, then prune the early-exit network "
                              "(unstructured/structured × simultaneous/sequential)")
    _job_flags(p)
    _flag(p, "plot", help="per-layer sparsity figure (PNG; most useful with --schedule both)")
    _flag(p, "method", choices=("unstructured", "structured"),
          help="unstructured (global weight magnitude) or structured (torch-pruning channel groups)")
    _flag(p, "schedule", choices=("simultaneous", "sequential", "both"),
          help="prune backbone and exits together, backbone then exits, or both compared")
    _flag(p, "ratio", float, help="fraction of weights (unstructured) or channels (structured)")
    _flag(p, "rounds", int, help="prune → fine-tune rounds")
    _flag(p, "steps_per_round", int, help="fine-tuning SGD steps after each round")
    _flag(p, "exit_steps_per_round", int,
          help="sequential: exit fine-tuning steps per round in phase 2 (none: --steps-per-round)")
    _flag(p, "batch_size", int, help="fine-tuning batch size")
    _flag(p, "lr", float, help="backbone fine-tuning learning rate")
    _flag(p, "exit_lr", float, help="exit heads fine-tuning learning rate")
    _flag(p, "exit_weight", float, help="loss weight of every exit in joint fine-tuning (final: 1)")
    _flag(p, "ignore_layers", help="comma-separated module names never pruned")
    _flag(p, "seed", int, help="random seed (subsets, pruning, batches)")
    _flag(p, "recovery", choices=("ce", "distill"), help="loss of every fine-tuning step: "
          "cross-entropy on the labels, or distillation from the unpruned network (default ce)")
    _flag(p, "recover_epochs", float, help="recovery fine-tuning after the last round, in "
          "epochs of the training data, cosine learning rate (default 0)")
    _flag(p, "recover_lr", float, help="backbone learning rate of recovery (default 0.01)")
    _flag(p, "kd_temperature", float, help="distillation temperature T (default 4)")
    _flag(p, "kd_alpha", float, help="weight α of the distillation term; 1 − α on the labels' "
          "cross-entropy (default 0.9)")
    _flag(p, "kd_exit_teacher", choices=("counterpart", "final"), help="an exit distils from "
          "its unpruned counterpart exit or from the unpruned final output (default counterpart)")
    _flag(p, "budget_min", float, help="budget of pruning + recovery in minutes of "
          "--budget-clock; recovery stops there (default: none)")
    _flag(p, "budget_clock", choices=("wall", "cpu"), help="what --budget-min counts: wall "
          "clock, or this process's CPU time (all threads; fair on a shared machine) "
          "(default wall)")
    _flag(p, "max_accuracy_drop", float, help="warn when the final accuracy drops more than "
          "this versus the unpruned network (default 0.03 = 3 points)")
    _train_flags(p, "train_")
    config_defaults(p, ("", JOB), ("", PRUNE), ("train_", TRAIN))
    return {"train-exits": cmd_train_exits, "prune": cmd_prune}


def read_recipe(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe {p} not found; pass an existing YAML file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {p} is not valid YAML ({err})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {p} must be a mapping of config keys, got {type(data).__name__}")
    return data


def build(cls: type, values: dict[str, Any], where: str) -> Any:
    """`cls(**values)` after refusing unknown keys and turning lists/CSV into tuples."""
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {sorted(names)}")
    vals = dict(values)
    for key, typ in TUPLE_FIELDS.items():
        v = vals.get(key)
        if isinstance(v, str):
            v = [s for s in v.split(",") if s.strip()]
        if isinstance(v, (list, tuple)):
            try:
                vals[key] = tuple(typ(s.strip() if isinstance(s, str) else s) for s in v)
            except ValueError as err:
                raise ConfigError(f"{where}: {key} must be a list of {typ.__name__}: {err}") from err
    try:
        return cls(**vals)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from err


def _split(args: argparse.Namespace, recipe: dict[str, Any], classes: list[type],
           where: str) -> list[Any]:
    """One config per class: recipe values overridden by the flags given."""
    merged = {**recipe, **{k: v for k, v in vars(args).items()
                           if (k not in ("command", "recipe") and not k.startswith("train_"))
                           or k == "train_subset"}}
    names = [{f.name for f in dataclasses.fields(c)} for c in classes]
    unknown = [k for k in merged if not any(k in n for n in names)]
    if unknown:
        extra = ["train_exits"] if where == "prune" else []
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: "
                          f"{sorted(set().union(*names, extra))}")
    return [build(c, {k: v for k, v in merged.items() if k in n}, where)
            for c, n in zip(classes, names, strict=True)]


def _load(job: JobConfig, seed: int = 0):  # -> (net, fit, calib, test, source)
    import numpy as np

    from edge_ee.build import load_model
    from edge_ee.data import split_indices

    net, train, test, source = load_model(job.model, job.data)
    rng = np.random.default_rng(seed)
    if job.train_subset is not None and job.train_subset < len(train):
        train = train.subset(np.sort(rng.permutation(len(train))[: job.train_subset]))
    if job.test_subset is not None and job.test_subset < len(test):
        test = test.subset(np.sort(rng.permutation(len(test))[: job.test_subset]))
    fit_idx, cal_idx = split_indices(len(train), job.calib_fraction, seed)
    return net, train.subset(fit_idx), train.subset(cal_idx), test, source


def _fmt(accs: list[float]) -> str:
    return " ".join(f"{a:.3f}" for a in accs)


def cmd_train_exits(a: argparse.Namespace) -> int:
    from edge_ee.exits.trained import (
        TrainExitsConfig,
        attach_exits,
        exit_accuracies,
        train_exits,
    )

    job, cfg = _split(a, read_recipe(a.recipe), [JobConfig, TrainExitsConfig], "train-exits")
    net, fit, calib, test, source = _load(job, cfg.seed)
    model = attach_exits(net, cfg.exits, cfg.pool, cfg.seed)
    rep = train_exits(model, fit, cfg)
    if job.exits_file:
        from edge_ee.exits.saved import save_exits

        save_exits(model, job.exits_file, source, cfg.mode)
        print(f"wrote {job.exits_file} (trained exits {model.exit_indices})", file=sys.stderr)
    accs = exit_accuracies(model, test)
    print(f"trained {cfg.mode} exits in {rep.seconds:.1f}s ({rep.steps} steps); test accuracy "
          f"per exit {model.exit_indices} + final: {_fmt(accs)}", file=sys.stderr)
    result: dict[str, Any] = {"per_exit_accuracy": accs, "exits": model.exit_indices,
                              "train_seconds": rep.seconds, "steps": rep.steps}
    if job.out:
        from edge_ee.pruning.report import export_pruned

        path, rec = export_pruned(model, calib, test, job.out, f"{net.name}-trained-{cfg.mode}",
                                  cfg.confidence, job.max_drop, job.overwrite)
        result["bundle"] = {"path": str(path), **rec}
        print(f"wrote {path} (test accuracy {rec['test_point']['accuracy']:.4f} at cost "
              f"{rec['test_point']['cost_fraction']:.3f})", file=sys.stderr)
    _write_report(job, result)
    return 0


def cmd_prune(a: argparse.Namespace) -> int:
    from edge_ee.exits.trained import TrainExitsConfig, attach_exits, exit_accuracies, train_exits
    from edge_ee.pruning import PruneConfig, prune_early_exit, sparsity_figure

    recipe = read_recipe(a.recipe)
    nested = recipe.pop("train_exits", None) or {}
    if not isinstance(nested, dict):
        raise ConfigError("prune recipe: 'train_exits' must be a mapping of exit-training keys")
    flags = {k[len("train_"):]: v for k, v in vars(a).items()
             if k.startswith("train_") and k != "train_subset"}
    tcfg = build(TrainExitsConfig, {**nested, **flags}, "prune recipe train_exits")
    schedule = {**recipe, **vars(a)}.get("schedule", "simultaneous")
    recipe.pop("schedule", None)
    ns = argparse.Namespace(**{k: v for k, v in vars(a).items() if k != "schedule"})
    job, base = _split(ns, recipe, [JobConfig, PruneConfig], "prune")
    schedules = ("simultaneous", "sequential") if schedule == "both" else (schedule,)
    cfgs = [dataclasses.replace(base, schedule=s) for s in schedules]  # validates the name
    net, fit, calib, test, source = _load(job, base.seed)
    from edge_ee.pruning.config import check_layers

    if job.exits_file:
        from edge_ee.exits.saved import load_exits

        if flags:
            raise ConfigError(f"--exits-file reuses trained exits; the exit-training flags "
                              f"{sorted('--train-' + k.replace('_', '-') for k in flags)} "
                              "would do nothing: drop them or drop --exits-file")
        model = load_exits(net, job.exits_file, source)
        check_layers(model, base.ignore_layers)
        print(f"reusing trained exits {model.exit_indices} from {job.exits_file}",
              file=sys.stderr)
    else:
        model = attach_exits(net, tcfg.exits, tcfg.pool, tcfg.seed)
        check_layers(model, base.ignore_layers)  # before spending time on training
        train_exits(model, fit, tcfg)
    result: dict[str, Any] = {"exits": model.exit_indices,
                              "exits_file": job.exits_file,
                              "unpruned_per_exit_accuracy": exit_accuracies(model, test),
                              "warnings": []}
    print(f"unpruned: per-exit test accuracy {_fmt(result['unpruned_per_exit_accuracy'])}",
          file=sys.stderr)
    reports = {}
    for cfg in cfgs:
        pruned, rep = prune_early_exit(model, fit, cfg, evaluate=test)
        accs = rep.accuracy_after
        reports[cfg.schedule] = rep
        result[cfg.schedule] = {**rep.to_json(), "per_exit_accuracy": accs}
        result["warnings"] += [f"{cfg.schedule}: {w}" for w in rep.warnings]
        print(f"{cfg.method} {cfg.schedule}: FLOPs {rep.flops_before} → {rep.flops_after}, "
              f"nonzero params {rep.params_before} → {rep.params_after}; per-exit test accuracy "
              f"{_fmt(rep.accuracy_pruned)} after pruning, {_fmt(accs)} after recovery "
              f"({cfg.recovery}, {rep.recover_steps} steps; {rep.seconds:.0f} s wall, "
              f"{rep.cpu_seconds:.0f} s CPU)", file=sys.stderr)
        if job.out:
            from edge_ee.pruning.report import compressed_size, export_pruned

            out = Path(job.out) / cfg.schedule if len(cfgs) > 1 else Path(job.out)
            path, rec = export_pruned(pruned, calib, test, out,
                                      f"{net.name}-{cfg.method}-{cfg.schedule}",
                                      tcfg.confidence, job.max_drop, job.overwrite)
            result[cfg.schedule]["bundle"] = {"path": str(path), **rec, **compressed_size(path)}
            print(f"wrote {path}", file=sys.stderr)
    if job.plot:
        sim = reports.get("simultaneous") or next(iter(reports.values()))
        seq = reports.get("sequential") or sim
        sparsity_figure(sim.layer_sparsity, seq.layer_sparsity, job.plot,
                        f"{net.name}: {base.method} pruning, ratio {base.ratio}")
        print(f"wrote {job.plot}", file=sys.stderr)
    _write_report(job, result)
    return 0


def _write_report(job: JobConfig, result: dict[str, Any]) -> None:
    if job.report:
        from device_runners.files import atomic_write_json
        atomic_write_json(job.report, result, default=str)
    else:
        print(json.dumps({k: v for k, v in result.items() if k != "bundle"}, default=str))
