"""Issue-13 evidence: early exit for clustering (E2CM without labels), side by side.

One run per encoder source (`edge_ee.clustering.encoders`):
* k-means (K = 10, scikit-learn, 10 restarts) on the final embedding of the fitting
  samples; each sample's final cluster assignment is its pseudo-label;
* exit variants fitted in one statistics pass and one calibration pass on those
  pseudo-labels (`pipeline.fit_variants`, held-out 10 % of the fitting samples):
  E2CM as published (raw feature map, max softmax(−d)), 2×2-pooled E2CM, pooled E2CM with
  the margin confidence, and shared-covariance (LDA) exits on 2×2-pooled features;
* thresholds: the greedy path with ≤ `--max-drop` loss of agreement with the final
  assignment on the calibration part, and for E2CM-raw also the paper's search (100
  random threshold vectors uniform in [0, 1], convex hull);
* the whole test split scored: expected cost (fraction of the full network's FLOPs,
  exit heads included), agreement, clustering accuracy (Hungarian) and NMI — true labels
  used only here;
* the variant cheapest on the calibration part is exported (`pipeline.export`) and run by
  `edge-ee-run` on the whole test split, beside the monolithic network, and scored again.

    python benchmarks/bench_clustering.py --encoder fashion-ae             # all 60k, 10k test
    python benchmarks/bench_clustering.py --fit-samples 20000 --no-runner \
        --variants e2cm e2cm::distance e2cm:2:distance lda:2     # the "close enough" reading
    python benchmarks/bench_clustering.py --encoder resnet-cifar --fit-samples 5000 \
        --test-samples 2000      # sized for 2 heavily shared CPU cores
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from device_runners import cli as run_cli
from edge_ee.calibrate import greedy_path, pick_max_drop, random_hull
from edge_ee.clustering.build import balanced_sample
from edge_ee.clustering.config import ClusterConfig
from edge_ee.clustering.encoders import load_encoder_source
from edge_ee.clustering.fit import cluster, cluster_eval, cluster_names
from edge_ee.clustering.metrics import score_run
from edge_ee.cost import cost_table
from edge_ee.data import atomic_save_npz
from edge_ee.exits import ExitSpec
from edge_ee.exits.fit import score_split
from edge_ee.pipeline import FitConfig, export, fit_variants, set_thresholds, table_for

VARIANTS = ("e2cm", "e2cm:2", "e2cm:2:margin", "lda:2")
PUBLISHED = "thesis: up to 60 % less compute with negligible loss of clustering performance " \
            "(MNIST, Fashion-MNIST)"


def run(a: argparse.Namespace) -> dict:
    out = Path(a.out) / a.encoder
    t0 = time.perf_counter()
    cfg = ClusterConfig(out=str(out), encoder=a.encoder, clusters=a.clusters,
                        fit_samples=a.fit_samples, fit=FitConfig(max_drop=a.max_drop))
    enc = load_encoder_source(a.encoder, a.data)
    if a.test_samples:  # class-balanced (the CIFAR test split is stored class-sorted)
        enc.test = enc.test.subset(balanced_sample(enc.test, a.test_samples, 0))
    c = cluster(enc, cfg)
    n_exits = c.net.num_exits
    specs = [ExitSpec.parse(v) for v in a.variants]
    variants = [[s] * n_exits for s in specs]
    head_sets, calib, fit_s = fit_variants(c.net, c.pseudo, variants, cfg.fit.calib_fraction,
                                           cfg.fit.batch_size, cfg.fit.seed)
    test_scores = score_split(c.net, head_sets, enc.test, cfg.fit.batch_size, True, "test")
    rows, chosen = [], {}
    for spec, heads, cal, ts in zip(specs, head_sets, calib, test_scores, strict=True):
        costs = cost_table(c.net, heads)
        table = table_for(heads, cal, costs)
        ev = cluster_eval(heads, ts, costs, enc.test)
        searches = [("greedy", greedy_path(table))]
        if spec == ExitSpec("e2cm"):
            searches.append(("paper-random", random_hull(table, 100, cfg.fit.seed,
                                                         observed_range=False)))
        for search, path in searches:
            point = pick_max_drop(path, a.max_drop)
            test = ev.point(point.thresholds)
            curve = [ev.point(p.thresholds) for p in path[:: max(1, len(path) // 40)]]
            rows.append({"variant": spec.label, "search": search,
                         "calib_cost": point.cost_fraction, "calib_agreement": point.accuracy,
                         "thresholds": list(point.thresholds), **test, "curve": curve})
            chosen[(spec.label, search)] = (heads, costs, point)
    full = ev.point(np.full(n_exits, np.inf))
    best = min((r for r in rows if r["search"] == "greedy"), key=lambda r: r["calib_cost"])
    heads, costs, point = chosen[(best["variant"], "greedy")]
    set_thresholds(heads, point.thresholds)
    res = {"encoder": enc.name, "features_trained_with": enc.features_trained_with,
           "clusters": c.k, "fit_samples": len(c.pseudo), "test_samples": len(enc.test),
           "kmeans_inertia": c.inertia, "cluster_sizes": c.sizes.tolist(),
           "full_flops": costs.full_flops, "fit_seconds": fit_s, "full": full, "rows": rows,
           "published": PUBLISHED}
    if a.runner:
        res["device"] = device_runs(c, heads, enc, out, best["variant"])
    res["seconds"] = time.perf_counter() - t0
    return res


def device_runs(c, heads, enc, out: Path, label: str) -> dict:
    """Export the chosen variant and the monolithic network; edge-ee-run both on all of test."""
    as_clusters = replace(enc.test, labels=np.zeros(len(enc.test), np.int64),
                          classes=cluster_names(c.k))
    bundles = {
        "early-exit": export(c.net, heads, out / "bundle-ee", as_clusters,
                             f"{c.net.name}-{label}", None, enc.source_sha256, overwrite=True,
                             task="clustering"),
        "full": export(c.net, [None] * c.net.num_exits, out / "bundle-full", as_clusters,
                       f"{c.net.name}-full", None, enc.source_sha256, monolithic=True,
                       overwrite=True, task="clustering"),
    }
    atomic_save_npz(out / "test.npz", x=enc.test.images)  # images only
    scores = {}
    for name, b in bundles.items():
        code = run_cli.main([str(b), "--input", str(out / "test.npz"), "--out",
                             str(out / f"results-{name}.json"), "--idle-s", "0", "--quiet"])
        if code != 0:
            raise SystemExit(code)
        scores[name] = score_run(out / f"results-{name}.json", b, enc.test.labels)
    return scores


def show(res: dict) -> None:
    f = res["full"]
    print(f"\n== {res['encoder']}: K={res['clusters']}, fit on {res['fit_samples']} training "
          f"samples, scored on all {res['test_samples']} test samples")
    print(f"   features trained with: {res['features_trained_with']}")
    print(f"   full network: clustering accuracy {f['clustering_accuracy']:.4f}, "
          f"NMI {f['nmi']:.4f}, {res['full_flops'] / 1e6:.2f} MFLOPs")
    print(f"{'variant':<28}{'search':<14}{'calib cost':>11}{'test cost':>10}{'agree':>8}"
          f"{'acc':>8}{'Δacc':>8}{'NMI':>8}")
    for r in res["rows"]:
        print(f"{r['variant']:<28}{r['search']:<14}{r['calib_cost']:>11.3f}"
              f"{r['cost_fraction']:>10.3f}{r['agreement']:>8.4f}"
              f"{r['clustering_accuracy']:>8.4f}"
              f"{(r['clustering_accuracy'] - f['clustering_accuracy']) * 100:>+8.2f}"
              f"{r['nmi']:>8.4f}")
    for name, d in (res.get("device") or {}).items():
        print(f"edge-ee-run {name:<12} {d['samples']} samples: cost {d['cost_fraction']:.3f}, "
              f"clustering accuracy {d['clustering_accuracy']:.4f}, NMI {d['nmi']:.4f}, "
              f"p50 latency {d['latency_ns_p50'] / 1e3:.1f} µs")
    print(f"   {res['published']}; {res['seconds']:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="fashion-ae")
    ap.add_argument("--data", default=None)
    ap.add_argument("--clusters", type=int, default=10)
    ap.add_argument("--fit-samples", type=int, default=None)
    ap.add_argument("--test-samples", type=int, default=None,
                    help="score a class-balanced sample of the test split (default: all of it)")
    ap.add_argument("--max-drop", type=float, default=0.01)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--runner", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", default="bench-out/clustering")
    a = ap.parse_args()
    torch.set_num_threads(2)
    res = run(a)
    show(res)
    path = Path(a.out) / f"{a.encoder}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
