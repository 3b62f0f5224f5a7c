"""Issue-5 evidence: E2CM vs trained exits (and both combined) under a one-epoch budget.

For each dataset the training split (a seeded subset, see below) is cut once into a 90 %
fitting part and a 10 % calibration part (`split_indices`, as `fit_exits` does):
* E2CM (paper: raw feature map; and globally pooled) — one statistics pass over the
  fitting part, ν and thresholds from the calibration part;
* trained exits, IC-only (SDN: backbone frozen) — one epoch of SGD (batch 64) over the
  fitting part, linear on the globally pooled feature, max-softmax confidence;
* trained exits, joint (BranchyNet: backbone + exits on Σ CE, equal weights) — one epoch;
* E2CM (raw) + trained IC-only at the same exit: `mean` (average of the two softmax
  distributions) and `product` (product of experts) rules; and the same with E2CM's
  scores temperature-scaled first (T fitted by NLL on the calibration part, `e2cm(T)`),
  since E2CM's softmax(−d) is nearly flat and otherwise barely moves the combination.
Thresholds: the greedy path on the calibration part; accuracy-versus-FLOPs curves are
that path evaluated on the test split; "acc@b" = the most accurate calibration point
costing ≤ b of the full network, measured on test.

Sizes for 2 shared CPU cores (1 torch thread): CIFAR-10 + pretrained ResNet-20, exits
after blocks 0–7, 20 000 training images (so "one epoch" = 18 000 images), 5000 test
images; Fashion-MNIST + the shipped small CNN cut with from_sequential(model,
[0, 1, 2, 3, 4]), exits after children 0–3, all 60 000 training images, the 10 000 test
images.

    python benchmarks/bench_trained_vs_e2cm.py [--out bench-out/trained-vs-e2cm]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from edge_ee.calibrate import greedy_path, pick_budget
from edge_ee.cost import cost_table
from edge_ee.data import (
    ImageSplit,
    load_cifar10_jpeg,
    load_fashion_mnist,
    shared_data_dir,
    split_indices,
)
from edge_ee.exitnet import ExitNet, from_resnet_cifar, from_sequential
from edge_ee.exits import ExitSpec
from edge_ee.exits.combined import combine_heads
from edge_ee.exits.fit import score_split
from edge_ee.exits.trained import TrainExitsConfig, attach_exits, to_exit_heads, train_exits
from edge_ee.models.resnet_cifar import load_resnet_cifar
from edge_ee.models.small_cnn import load_small_cnn
from edge_ee.pipeline import fit_variants, table_for

BUDGETS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def curves_for(net: ExitNet, sets: dict, calib: ImageSplit, test: ImageSplit) -> dict:
    """Per head set: greedy path on calib, evaluated on test; acc@budget; per-exit accuracy."""
    names = list(sets)
    cal = score_split(net, [sets[k] for k in names], calib, 256, False)
    tst = score_split(net, [sets[k] for k in names], test, 256, False)
    out = {}
    for k, cs, ts in zip(names, cal, tst, strict=True):
        heads = sets[k]
        costs = cost_table(net, heads)
        ctab, ttab = table_for(heads, cs, costs), table_for(heads, ts, costs)
        path = greedy_path(ctab, progress=False)
        test_pts = [ttab.evaluate(np.asarray(p.thresholds)) for p in path]
        at = {}
        for b in BUDGETS:
            p = pick_budget(path, b)
            at[str(b)] = None if p is None else ttab.evaluate(np.asarray(p.thresholds)).accuracy
        per_exit = [float(ttab.correct[i].mean()) for i in range(len(heads)) if heads[i] is not None]
        out[k] = {"curve_test": [[p.cost_fraction, p.accuracy] for p in test_pts],
                  "acc_at_budget": at, "per_exit_accuracy": per_exit,
                  "full_accuracy": ttab.full_accuracy, "full_flops": costs.full_flops}
    return out


def run_dataset(name: str, net: ExitNet, train: ImageSplit, test: ImageSplit,
                exits: tuple[int, ...]) -> dict:
    fit_idx, cal_idx = split_indices(len(train), 0.1, 0)
    fit, calib = train.subset(fit_idx), train.subset(cal_idx)
    variant = [None] * net.num_exits
    v_raw, v_pool, v_temp = list(variant), list(variant), list(variant)
    for i in exits:
        v_raw[i] = ExitSpec("e2cm", None, "max_softmax")
        v_pool[i] = ExitSpec("e2cm", 1, "max_softmax")
        v_temp[i] = ExitSpec("e2cm", None, "temperature")
    seconds = {}
    (raw, pooled, temp), _, secs = fit_variants(net, train, [v_raw, v_pool, v_temp], 0.1, 256, 0,
                                                False)
    seconds["e2cm (raw, pooled, raw+T: one shared pass)"] = secs
    cfg = TrainExitsConfig(mode="ic-only", exits=exits, epochs=1, lr=0.05)
    sdn = attach_exits(net, exits)
    seconds["trained ic-only (1 epoch)"] = train_exits(sdn, fit, cfg, progress=False).seconds
    trained = to_exit_heads(sdn)
    sets = {"e2cm raw (paper)": raw, "e2cm pool1": pooled, "trained ic-only (SDN)": trained,
            "e2cm+trained mean": combine_heads(raw, trained, "mean"),
            "e2cm+trained product": combine_heads(raw, trained, "product"),
            "e2cm(T)+trained mean": combine_heads(temp, trained, "mean"),
            "e2cm(T)+trained product": combine_heads(temp, trained, "product")}
    res = curves_for(net, sets, calib, test)
    joint = attach_exits(copy.deepcopy(net), exits)
    jcfg = TrainExitsConfig(mode="joint", exits=exits, epochs=1, lr=0.05, backbone_lr=0.002)
    seconds["trained joint (BranchyNet, 1 epoch)"] = train_exits(joint, fit, jcfg,
                                                                 progress=False).seconds
    res.update(curves_for(joint.net, {"trained joint (BranchyNet)": to_exit_heads(joint)},
                          calib, test))
    print(f"\n## {name}  (train {len(train)}: fit {len(fit)} / calib {len(calib)}; "
          f"test {len(test)}; exits after {list(exits)})")
    print("budget seconds: " + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items()))
    print("| exits | full acc | " + " | ".join(f"acc@{b}" for b in BUDGETS) + " | per-exit acc |")
    print("|---|---|" + "---|" * len(BUDGETS) + "---|")
    for k, v in res.items():
        cells = ["—" if v["acc_at_budget"][str(b)] is None else f"{v['acc_at_budget'][str(b)]:.3f}"
                 for b in BUDGETS]
        print(f"| {k} | {v['full_accuracy']:.3f} | " + " | ".join(cells) + " | "
              + " ".join(f"{a:.2f}" for a in v["per_exit_accuracy"]) + " |")
    return {"results": res, "seconds": seconds, "train": len(train), "test": len(test),
            "exits": list(exits)}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report), figsize=(6 * len(report), 4.5))
    for ax, (ds, r) in zip(np.atleast_1d(axes), report.items(), strict=True):
        for k, v in r["results"].items():
            c = np.asarray(v["curve_test"])
            order = np.argsort(c[:, 0])
            ax.plot(c[order, 0], c[order, 1], label=k, lw=1.2)
        ax.set_xlabel("expected FLOPs / full network")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{ds}: one-epoch budget")
        ax.set_xlim(0.2, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out/trained-vs-e2cm")
    ap.add_argument("--cifar-train", type=int, default=20000)
    ap.add_argument("--cifar-test", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=("cifar10", "fashion"), default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = {}
    rng = np.random.default_rng(0)
    if a.only in (None, "fashion"):
        net = from_sequential(load_small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28), "fashion-cnn")
        report["Fashion-MNIST (small CNN)"] = run_dataset(
            "Fashion-MNIST (small CNN)", net, load_fashion_mnist("train"),
            load_fashion_mnist("test"), (0, 1, 2, 3))
    if a.only in (None, "cifar10"):
        tr, te = load_cifar10_jpeg("train"), load_cifar10_jpeg("test")
        tr = tr.subset(np.sort(rng.permutation(len(tr))[: a.cifar_train]))
        te = te.subset(np.sort(rng.permutation(len(te))[: a.cifar_test]))
        net = from_resnet_cifar(load_resnet_cifar(shared_data_dir() / "resnet-cifar10/resnet20.npz"))
        report["CIFAR-10 (ResNet-20)"] = run_dataset("CIFAR-10 (ResNet-20)", net, tr, te,
                                                     tuple(range(8)))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    plot(report, out / "accuracy_vs_flops.png")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s; wrote {out / 'report.json'} and "
          f"{out / 'accuracy_vs_flops.png'}")


if __name__ == "__main__":
    main()
