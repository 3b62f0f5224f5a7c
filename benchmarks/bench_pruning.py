"""Issue-5 evidence: pruning an early-exit ResNet-20 with the simultaneous and sequential schedules.

Setup (sized for 2 shared CPU cores, torch with 1 thread, < 15 minutes):
* backbone: the shared pretrained ResNet-20 (CIFAR-10), exits after blocks
  [0, 1, 3, 4, 6, 7] (6 exits) + the final classifier; exit = global average pool + linear.
* data: a seeded 5000-image subset of the CIFAR-10 train split for training/fine-tuning,
  another 1000 train images for threshold calibration, a seeded 2000-image subset of
  the test split for every accuracy number.
* exits: trained IC-only (backbone frozen) for `--exit-epochs` epochs on the subset.
* pruning: `--rounds` prune → fine-tune rounds with `--steps` SGD steps (batch 64) per
  round and phase; unstructured at `--ratio` of the weights, structured at
  `--structured-ratio` of the channels (block-internal channels, see pruning/methods.py).
  Both schedules get the same number of rounds and steps per phase (sequential has two
  phases, so it runs twice as many — cheaper — steps: phase 2 trains only the heads).
* (a) per-exit test accuracy, simultaneous vs sequential, at equal overall sparsity;
  per-layer sparsity heatmap and difference (sparsity_<method>.png);
* (c) bundles of the unpruned and structured-pruned models (trained exits, thresholds
  calibrated at ≤ 1 point drop): edge-ee-run latency (runs A/B interleaved, per-sample
  median of the summed segment latency, 1 thread) and accuracy; unstructured: ONNX size
  raw and gzip.

    python benchmarks/bench_pruning.py [--out bench-out/pruning]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edge_ee.data import atomic_save_npz, load_cifar10_jpeg, shared_data_dir
from edge_ee.exitnet import from_resnet_cifar
from edge_ee.exits.trained import TrainExitsConfig, attach_exits, exit_accuracies, train_exits
from edge_ee.models.resnet_cifar import load_resnet_cifar
from edge_ee.pruning import (
    PruneConfig,
    compressed_size,
    export_pruned,
    prune_early_exit,
    sparsity_figure,
)

EXITS = (0, 1, 3, 4, 6, 7)
PAPER = {"exit1": {"simultaneous": 0.61, "sequential": 0.55},
         "final": {"simultaneous": 0.83, "sequential": 0.88}}


def edge_ee_run_latency(bundles: dict[str, Path], samples: Path, out: Path, repeats: int,
                        limit: int) -> dict:
    """Run edge-ee-run on each bundle, interleaved A, B, B, A, …; per-sample median latency."""
    lat: dict[str, list[int]] = {k: [] for k in bundles}
    acc: dict[str, float] = {}
    names = list(bundles)
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            res = out / f"results-{k}-{r}.json"
            subprocess.run([sys.executable, "-m", "device_runners.cli", str(bundles[k]),
                            "--input", str(samples), "--out", str(res), "--limit", str(limit),
                            "--threads", "1", "--idle-s", "0", "--power-source", "null",
                            "--profile", "none", "--quiet"], check=True)
            s = json.loads(res.read_text())["samples"]
            lat[k] += [sum(v) for v in s["segment_latency_ns"]]
            acc[k] = float(np.mean(np.asarray(s["prediction"]) == np.asarray(s["label"])))
    return {k: {"median_latency_us": float(np.median(v)) / 1e3, "accuracy": acc[k],
                "samples": len(v)} for k, v in lat.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=str(shared_data_dir() / "resnet-cifar10/resnet20.npz"))
    ap.add_argument("--out", default="bench-out/pruning")
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--exit-epochs", type=int, default=3)
    ap.add_argument("--ratio", type=float, default=0.7)
    ap.add_argument("--structured-ratio", type=float, default=0.4)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--latency-samples", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rng = np.random.default_rng(0)
    full_train, full_test = load_cifar10_jpeg("train"), load_cifar10_jpeg("test")
    perm = rng.permutation(len(full_train))
    train = full_train.subset(np.sort(perm[: a.train]))
    calib = full_train.subset(np.sort(perm[a.train : a.train + 1000]))
    test = full_test.subset(np.sort(rng.permutation(len(full_test))[: a.test]))
    net = from_resnet_cifar(load_resnet_cifar(a.weights))
    model = attach_exits(net, EXITS)
    rep = train_exits(model, train, TrainExitsConfig(epochs=a.exit_epochs, lr=0.05))
    base = exit_accuracies(model, test)
    report: dict = {"setup": vars(a), "exits": list(EXITS), "unpruned": base,
                    "exit_training_s": rep.seconds}
    print(f"unpruned per-exit test accuracy: {np.round(base, 3).tolist()} "
          f"(exit training {rep.seconds:.0f}s)", flush=True)
    pruned = {}
    for method, ratio in (("unstructured", a.ratio), ("structured", a.structured_ratio)):
        for sched in ("simultaneous", "sequential"):
            cfg = PruneConfig(method=method, schedule=sched, ratio=ratio, rounds=a.rounds,
                              steps_per_round=a.steps)
            p, r = prune_early_exit(model, train, cfg)
            accs = exit_accuracies(p, test)
            pruned[(method, sched)] = (p, r)
            report[f"{method}/{sched}"] = {**r.to_json(), "per_exit_accuracy": accs,
                                           "overall_sparsity": 1 - r.params_after / r.params_before}
            print(f"{method:12s} {sched:12s} {r.seconds:5.0f}s  sparsity "
                  f"{1 - r.params_after / r.params_before:.3f}  FLOPs {r.flops_after / 1e6:.1f}M "
                  f"(of {r.flops_before / 1e6:.1f}M)  per-exit {np.round(accs, 3).tolist()}",
                  flush=True)
        sparsity_figure(pruned[(method, "simultaneous")][1].layer_sparsity,
                        pruned[(method, "sequential")][1].layer_sparsity,
                        out / f"sparsity_{method}.png",
                        f"ResNet-20 + 6 exits, {method} pruning at ratio {ratio}")
    # (c) bundles and latency
    bundles = {}
    for key, m in (("unpruned", model), ("structured", pruned[("structured", "simultaneous")][0]),
                   ("unstructured", pruned[("unstructured", "simultaneous")][0])):
        path, rec = export_pruned(m, calib, test, out / f"bundle-{key}", f"resnet20-ee-{key}",
                                  overwrite=True)
        bundles[key] = path
        report[f"bundle/{key}"] = {**rec, **compressed_size(path)}
    samples = out / "test-samples.npz"
    atomic_save_npz(samples, x=test.images, y=test.labels)
    lat = edge_ee_run_latency({k: bundles[k] for k in ("unpruned", "structured")}, samples,
                              out, repeats=4, limit=a.latency_samples)
    report["latency"] = lat
    report["total_s"] = time.perf_counter() - t_start
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print_tables(report)


def print_tables(r: dict) -> None:
    n = len(r["exits"])
    print("\n(a) per-exit test accuracy after pruning (exit 1 … exit 6, final)")
    print("| run | sparsity | " + " | ".join(f"exit {i + 1}" for i in range(n)) + " | final |")
    print("|---|---|" + "---|" * (n + 1))
    print("| unpruned | 0 | " + " | ".join(f"{v:.3f}" for v in r["unpruned"]) + " |")
    for key in ("unstructured/simultaneous", "unstructured/sequential",
                "structured/simultaneous", "structured/sequential"):
        e = r[key]
        print(f"| {key} | {e['overall_sparsity']:.3f} | "
              + " | ".join(f"{v:.3f}" for v in e["per_exit_accuracy"]) + " |")
    for m in ("unstructured", "structured"):
        s, q = r[f"{m}/simultaneous"]["per_exit_accuracy"], r[f"{m}/sequential"]["per_exit_accuracy"]
        print(f"{m}: exit 1 sim {s[0]:.3f} vs seq {q[0]:.3f} (paper 0.61 vs 0.55) → "
              f"{'agrees' if s[0] > q[0] else 'disagrees'}; final sim {s[-1]:.3f} vs seq "
              f"{q[-1]:.3f} (paper 0.83 vs 0.88) → {'agrees' if q[-1] > s[-1] else 'disagrees'}")
    print("\n(c) bundles (trained exits, thresholds at ≤ 1 point drop on calibration)")
    print("| bundle | test acc | expected MFLOPs | full MFLOPs | onnx bytes | gzip bytes |")
    print("|---|---|---|---|---|---|")
    for k in ("unpruned", "structured", "unstructured"):
        b = r[f"bundle/{k}"]
        print(f"| {k} | {b['test_point']['accuracy']:.3f} | {b['test_expected_flops'] / 1e6:.1f} | "
              f"{b['full_flops'] / 1e6:.1f} | {b['onnx_bytes']} | {b['onnx_gzip_bytes']} |")
    print("| edge-ee-run | median latency µs | accuracy | samples |")
    print("|---|---|---|---|")
    for k, v in r["latency"].items():
        print(f"| {k} | {v['median_latency_us']:.0f} | {v['accuracy']:.3f} | {v['samples']} |")
    print(f"total {r['total_s']:.0f}s")


if __name__ == "__main__":
    main()
