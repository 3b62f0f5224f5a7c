"""Issue-16 evidence: structured pruning of ResNet-20 (CIFAR-10) to half its FLOPs, recovered.

Setup: the shared pretrained ResNet-20 with trained linear exits after blocks `--exits`
(IC-only, `--exit-steps` SGD steps on a class-balanced training sample; written to an
exits file and read back, as `edge-ee train-exits --exits-file` / `edge-ee prune
--exits-file` do). Each variant prunes a copy with torch-pruning channel groups at
`--ratio` (`--rounds` rounds of `--steps` fine-tuning steps), then fine-tunes for up to
`--recover-epochs` epochs of the whole 50k training split on a cosine learning rate,
stopped at `--budget-min` minutes of wall clock or, with `--budget-clock cpu`, of process
CPU time (evaluations not counted). Every accuracy
is on the whole 10k test split. Wall and process CPU time (all threads) are recorded with
the 1-minute load average, since the 2 cores are shared.

    python benchmarks/bench_prune_recovery.py [--variants distill,ce] [--budget-min 15] \
        [--budget-clock wall|cpu] [--threads 2] [--out bench-out/prune-recovery]
    # the run in docs/pruning-evidence.md:
    python benchmarks/bench_prune_recovery.py --variants distill --budget-min 6 --exit-steps 50 \
        --budget-clock cpu --recover-epochs 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from device_runners.manifest import sha256_file
from edge_ee.data import balanced_indices, load_cifar10_jpeg, shared_data_dir
from edge_ee.exitnet import from_resnet_cifar
from edge_ee.exits.saved import load_exits, save_exits
from edge_ee.exits.trained import TrainExitsConfig, attach_exits, train_exits
from edge_ee.models.resnet_cifar import load_resnet_cifar
from edge_ee.pruning import PruneConfig, prune_early_exit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=str(shared_data_dir() / "resnet-cifar10/resnet20.npz"))
    ap.add_argument("--out", default="bench-out/prune-recovery")
    ap.add_argument("--exits", default="2,5")
    ap.add_argument("--exit-steps", type=int, default=150)
    ap.add_argument("--variants", default="distill,ce", help="recovery losses to run")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--recover-epochs", type=float, default=1.0)
    ap.add_argument("--recover-lr", type=float, default=0.01)
    ap.add_argument("--budget-min", type=float, default=15.0)
    ap.add_argument("--budget-clock", default="wall", choices=("wall", "cpu"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--test", type=int, default=None, help="class-balanced test sample (default all)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test = load_cifar10_jpeg("train"), load_cifar10_jpeg("test")
    if a.test:
        test = test.subset(np.sort(balanced_indices(test.labels, a.test, 0)))
    net = from_resnet_cifar(load_resnet_cifar(a.weights))
    digest = sha256_file(a.weights)
    model = attach_exits(net, [int(i) for i in a.exits.split(",")])
    sample = train.subset(np.sort(balanced_indices(train.labels, 5000, 1)))
    t = time.perf_counter()
    train_exits(model, sample, TrainExitsConfig(max_steps=a.exit_steps, lr=0.05), progress=False)
    exits_s = time.perf_counter() - t
    save_exits(model, out / "exits.pt", digest, "ic-only")
    model = load_exits(net, out / "exits.pt", digest)  # what `edge-ee prune --exits-file` does
    report: dict = {"setup": vars(a), "exit_training_s": exits_s, "runs": {}}
    for variant in a.variants.split(","):
        cfg = PruneConfig(method="structured", schedule="simultaneous", ratio=a.ratio,
                          rounds=a.rounds, steps_per_round=a.steps, batch_size=a.batch_size,
                          recovery=variant, recover_epochs=a.recover_epochs,
                          recover_lr=a.recover_lr, budget_min=a.budget_min,
                          budget_clock=a.budget_clock)
        load0 = os.getloadavg()[0]
        _, rep = prune_early_exit(model, train, cfg, progress=False, evaluate=test)
        row = {**rep.to_json(), "load_before": load0, "load_after": os.getloadavg()[0]}
        row.pop("layer_sparsity")
        report["runs"][variant] = row
        print(json.dumps({k: row[k] for k in (
            "recovery", "flops_before", "flops_after", "accuracy_before", "accuracy_pruned",
            "accuracy_after", "recover_steps", "recover_steps_planned", "seconds", "cpu_seconds",
            "stopped_at_budget", "load_before", "load_after", "warnings")}), flush=True)
        (out / "report.json").write_text(json.dumps(report, indent=1))
    print_table(report)


def print_table(r: dict) -> None:
    print("| recovery | ratio | MFLOPs (of) | acc before | after pruning | after recovery | "
          "recovery steps | wall s | CPU s | budget min | load 1-min |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, e in r["runs"].items():
        print(f"| {k} | {e['ratio']} | {e['flops_after'] / 1e6:.1f} ({e['flops_before'] / 1e6:.1f}) "
              f"| {e['accuracy_before'][-1]:.4f} | {e['accuracy_pruned'][-1]:.4f} | "
              f"{e['accuracy_after'][-1]:.4f} | {e['recover_steps']}/{e['recover_steps_planned']} "
              f"| {e['seconds']:.0f} | {e['cpu_seconds']:.0f} | {e['budget_s'] / 60:g} "
              f"{e['budget_clock']} | "
              f"{e['load_before']:.1f}→{e['load_after']:.1f} |")


if __name__ == "__main__":
    main()
