"""Issue-17 evidence: certified thresholds (METHODS §6) versus today's uncertified search.

Per model (ResNet-20 and ResNet-56 on CIFAR-10 JPEG, the shipped Fashion-MNIST CNN):
exit heads are fitted once as `edge-ee build` does (statistics on the training split —
for the ResNets a seeded class-balanced subset of it, `--train-per-class` — ν and the
threshold path on its 10 % hold-out), and the hold-out and the whole test split are
scored once; the score tables are cached under `bench-out/`. Then, over `--splits`
random splits of the test split into a calibration slice (`--n-cal`) and a disjoint
evaluation slice (the rest), each method picks thresholds on the same fixed path:

* `uncertified (today)`: cheapest point within ε on the training hold-out (no --calib-data);
* `uncertified (calib slice)`: the same on the calibration slice (--calib-data, no --delta;
  on the refined path, as the certified methods);
* `certified binomial` / `certified HB`: fixed-sequence testing on the calibration slice
  (--calib-data --delta δ, exact binomial tail / Hoeffding–Bentkus);
* `certified on train hold-out`: the certificate computed on the training hold-out (the
  failure --calib-data fixes).

Reported per method: the fraction of splits whose evaluation-slice accuracy drop exceeds
ε (goal ≤ δ for certified methods), the same for the risk E[L] (the bounded quantity),
mean/median drop, mean cost fraction (pure FLOPs) on the evaluation slice, and the share
of splits that exported a point cheaper than the full network (`saving`; for certified
methods: something was certified). ε = 0.01, δ = 0.1 by default. Certified methods walk
the refined path (`--refine`, as `edge-ee build --delta` does); today's search picks on
the coarse greedy path.

Measured here (2026-12-01, ε = 0.01, δ = 0.1, 50 splits, e2cm as published; fractions of
splits with evaluation drop > ε, mean cost fraction):
  ResNet-20 (1000/class train, whole test, n_cal 1000 | 5000): today 1.00 | 1.00 (mean drop
  4.3 points, cost 0.859); calib-slice uncertified 0.54 | 0.28 (0.934 | 0.941); certified
  binomial 0.00 | 0.00 (0.976 | 0.973); HB 0.00 | 0.00 (0.980 | 0.975).
  ResNet-56 (500/class train, 600/class test, n_cal 1000 | 3000): today 1.00 | 1.00 (4.0
  points, 0.830); calib-slice 0.54 | 0.52 (0.925 | 0.929); certified binomial 0.00 | 0.00
  (0.973 | 0.969); HB 0.00 | 0.00 (0.975 | 0.971).
  Fashion CNN (60k train, n_cal 1000 | 5000): today 0.00 | 0.00 (0.814); calib-slice
  0.54 | 0.30 (0.756 | 0.767); certified binomial 0.00 | 0.00 (0.802 | 0.790).
  Commands: --models fashion resnet20 --train-per-class 1000; --models resnet56
  --train-per-class 500 --test-per-class 600 --n-cal 1000 3000 --out bench-out/certify-r56.

    nice python benchmarks/bench_certify.py [--models resnet20 resnet56 fashion]
        [--splits 50] [--n-cal 1000 5000] [--train-per-class 2000] [--out bench-out/certify]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from edge_ee.calib_source import balanced_subset
from edge_ee.calibrate import ExitTable, greedy_path, pick_max_drop, refine_path
from edge_ee.certify import BOUNDS, certify, losses
from edge_ee.cost import CostTable, cost_table, expected_cost
from edge_ee.data import load_cifar10_jpeg, load_fashion_mnist, shared_data_dir
from edge_ee.exitnet import from_resnet_cifar, from_sequential
from edge_ee.exits import ExitSpec
from edge_ee.exits.fit import score_split
from edge_ee.models.resnet_cifar import load_resnet_cifar
from edge_ee.models.small_cnn import load_small_cnn
from edge_ee.pipeline import fit_variants, table_for

VARIANTS = {"e2cm (paper)": ExitSpec("e2cm", None, "max_softmax"),
            "e2cm:2:margin": ExitSpec("e2cm", 2, "margin")}


def _model(name: str, per_class: int | None, test_per_class: int | None):
    data = shared_data_dir()
    if name == "fashion":
        net = from_sequential(load_small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28), "fashion-cnn")
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    else:
        net = from_resnet_cifar(load_resnet_cifar(data / "resnet-cifar10" / f"{name}.npz"))
        train, test = load_cifar10_jpeg("train"), load_cifar10_jpeg("test")
    if per_class:
        train, _ = balanced_subset(train, per_class * len(train.classes), seed=0)
    if test_per_class:
        test, _ = balanced_subset(test, test_per_class * len(test.classes), seed=0)
    return net, train, test


def _save_table(z: dict, key: str, t: ExitTable) -> None:
    z[f"{key}_pred"], z[f"{key}_conf"], z[f"{key}_labels"] = t.pred, t.conf, t.labels
    z[f"{key}_has"] = t.has_head


def _load_table(z, key: str, costs: CostTable) -> ExitTable:
    return ExitTable(z[f"{key}_pred"], z[f"{key}_conf"], z[f"{key}_labels"], costs,
                     z[f"{key}_has"])


def score_tables(name: str, per_class: int | None, test_per_class: int | None, out: Path
                 ) -> dict[str, tuple]:
    """{variant: (holdout table, test table)}, fitted once and cached."""
    cache = out / f"tables-{name}-{per_class or 'all'}-{test_per_class or 'all'}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            meta = json.loads(str(z["meta"]))
            res = {}
            for v, m in meta["variants"].items():
                costs = CostTable(tuple(m["stage_flops"]), m["classifier_flops"],
                                  tuple(m["head_flops"]))
                res[v] = (_load_table(z, f"{v}/hold", costs), _load_table(z, f"{v}/test", costs))
            print(f"{name}: score tables from {cache} (fit {meta['fit_seconds']:.0f} s)")
            return res
    net, train, test = _model(name, per_class, test_per_class)
    t0 = time.perf_counter()
    variants = [[s] * net.num_exits for s in VARIANTS.values()]
    head_sets, holds, _ = fit_variants(net, train, variants, 0.1, 256, 0, progress=False)
    tests = score_split(net, head_sets, test, 256, False)
    secs = time.perf_counter() - t0
    z: dict = {}
    meta: dict = {"fit_seconds": secs, "n_train": len(train), "variants": {}}
    res = {}
    for v, heads, hs, ts in zip(VARIANTS, head_sets, holds, tests, strict=True):
        costs = cost_table(net, heads)
        hold, tt = table_for(heads, hs, costs), table_for(heads, ts, costs)
        _save_table(z, f"{v}/hold", hold)
        _save_table(z, f"{v}/test", tt)
        meta["variants"][v] = costs.to_json()
        res[v] = (hold, tt)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(cache, meta=json.dumps(meta), **z)
    print(f"{name}: fitted and scored in {secs:.0f} s ({len(train)} training samples)")
    return res


def _sub(t: ExitTable, idx: np.ndarray) -> ExitTable:
    return ExitTable(t.pred[:, idx], t.conf[:, idx], t.labels[idx], t.costs, t.has_head)


def fixed_sequence(loss_counts: np.ndarray, n: int, eps: float, delta: float, bound: str,
                   skip: np.ndarray) -> int | None:
    """Index of the last certified path point (fixed-sequence testing), None if none."""
    b, last = BOUNDS[bound], None
    for i, k in enumerate(loss_counts):
        if skip[i]:
            continue
        if b.p_value(k / n, n, eps) > delta:
            break
        last = i
    return last


def run_model(name: str, tables: dict, args) -> dict:
    eps, delta = args.epsilon, args.delta
    result: dict = {}
    for v, (hold, test) in tables.items():
        coarse = greedy_path(hold)
        path = refine_path(hold, coarse, args.refine)  # what `--delta` walks (--refine)
        thr = np.array([p.thresholds for p in path])  # (P, E)
        skip = ~np.isfinite(thr).any(1)
        # per path point and test sample: the exit taken, early-exit correctness, the loss
        ex = np.stack([test.assign(t) for t in thr]).astype(np.int16)
        ee_ok = test.correct[ex, np.arange(test.n)[None, :]]
        loss = test.correct[-1][None, :] & ~ee_ok
        cps = np.stack([expected_cost(test.costs, e, test.enabled(t))
                        for e, t in zip(ex, thr, strict=True)]
                       ).astype(np.float32) / test.costs.full_flops  # (P, N) cost fractions
        hold_loss = np.stack([losses(hold, t) for t in thr])
        today = path.index(pick_max_drop(coarse, eps))  # today's search: the coarse path
        rng = np.random.default_rng(args.seed)
        rows: dict[str, dict[int, list]] = {}
        for n_cal in args.n_cal:
            hn = min(n_cal, hold.n)
            for s in range(args.splits):
                perm = rng.permutation(test.n)
                cal, ev = perm[:n_cal], perm[n_cal:]
                cal_t = _sub(test, cal)
                acc_cal = ee_ok[:, cal].mean(1)
                picks: dict[str, int | None] = {"uncertified (today)": today}
                ok = acc_cal >= test.correct[-1][cal].mean() - eps - 1e-12
                costs_cal = cps[:, cal].mean(1)
                picks["uncertified (calib slice)"] = int(np.flatnonzero(ok)[
                    np.argmin(costs_cal[ok])])
                for bound, label in (("binomial", "certified binomial"),
                                     ("hoeffding_bentkus", "certified HB")):
                    picks[label] = fixed_sequence(loss[:, cal].sum(1), n_cal, eps, delta, bound,
                                                  skip)
                hsel = rng.choice(hold.n, hn, replace=False)
                picks["certified on train hold-out"] = fixed_sequence(
                    hold_loss[:, hsel].sum(1), hn, eps, delta, "binomial", skip)
                if s == 0:  # the library's certify() agrees with the vectorised walk
                    c = certify(cal_t, path, eps, delta, "binomial")
                    assert c.index == picks["certified binomial"], (c.index, picks)
                    assert certify(cal_t, path, eps, delta, "hoeffding_bentkus").index == \
                        picks["certified HB"]
                full = test.correct[-1][ev].mean()
                for m, i in picks.items():
                    p = 0 if i is None else i
                    rows.setdefault(m, {}).setdefault(n_cal, []).append(
                        (full - ee_ok[p, ev].mean(), loss[p, ev].mean(), cps[p, ev].mean(),
                         i is not None and not skip[p]))
        summary = {}
        for m, by_n in rows.items():
            for n_cal, r in by_n.items():
                a = np.array(r, float)
                summary[f"{m} | n_cal={n_cal}"] = {
                    "splits": len(a), "frac_drop_gt_eps": float((a[:, 0] > eps).mean()),
                    "frac_risk_gt_eps": float((a[:, 1] > eps).mean()),
                    "mean_drop": float(a[:, 0].mean()), "median_drop": float(np.median(a[:, 0])),
                    "max_drop": float(a[:, 0].max()),
                    "mean_cost_fraction": float(a[:, 2].mean()),
                    "frac_saving_exported": float(a[:, 3].mean())}
        result[v] = {"holdout_n": hold.n, "test_n": test.n, "coarse_path_points": len(coarse),
                     "full_accuracy": {"holdout": hold.full_accuracy, "test": test.full_accuracy},
                     "path_points": len(path), "methods": summary}
        _print(name, v, result[v], eps, delta)
    return result


def _print(name: str, v: str, r: dict, eps: float, delta: float) -> None:
    print(f"\n== {name} / {v}: full accuracy hold-out {r['full_accuracy']['holdout']:.4f}, "
          f"test {r['full_accuracy']['test']:.4f}; ε={eps}, δ={delta}; path {r['path_points']}")
    print(f"{'method | n_cal':48s} {'P(drop>ε)':>9s} {'P(risk>ε)':>9s} {'mean drop':>9s} "
          f"{'max drop':>9s} {'cost':>6s} {'saving':>6s}")
    for m, s in r["methods"].items():
        print(f"{m:48s} {s['frac_drop_gt_eps']:9.2f} {s['frac_risk_gt_eps']:9.2f} "
              f"{s['mean_drop']:9.4f} {s['max_drop']:9.4f} {s['mean_cost_fraction']:6.3f} "
              f"{s['frac_saving_exported']:6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["fashion", "resnet20", "resnet56"])
    ap.add_argument("--splits", type=int, default=50)
    ap.add_argument("--n-cal", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--train-per-class", type=int, default=2000,
                    help="class-balanced CIFAR training subset for the ResNets (0 = all 50k)")
    ap.add_argument("--test-per-class", type=int, default=0,
                    help="class-balanced random test subset per class (0 = the whole split)")
    ap.add_argument("--epsilon", type=float, default=0.01)
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refine", type=int, default=8, help="as `edge-ee build --refine`")
    ap.add_argument("--out", type=Path, default=Path("bench-out/certify"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    for name in args.models:
        per_class = None if name == "fashion" or not args.train_per_class else args.train_per_class
        tpc = args.test_per_class or None
        out[name] = run_model(name, score_tables(name, per_class, tpc, args.out), args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
