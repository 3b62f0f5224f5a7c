"""Overhead of the power sampler thread on the runner's latency (goal: median ratio <= 1.02).

    .venv/bin/python benchmarks/bench_sampler_overhead.py --bundle edge-ee-demo/bundle \
        [--input edge-ee-demo/test_samples.npz] [--blocks 30] [--block-samples 3000] \
        [--out bench-out/sampler_overhead.json]

Three conditions, run in interleaved blocks (the order shuffled in every block, so drift
and other load on the machine fall on all of them alike): no sampler; a real
`PowerSampler` thread on the `estimated` source (reads /proc/stat, the profile's power
model) at its default period; the same at a 10 ms period. Each block runs
`device_runners.executor.run_single` over the same inputs, exactly as `edge-ee-run` does.
Reported: per condition the median end-to-end latency per sample (sum of its segments)
and the median over blocks of (block median with sampler / block median without).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_runners.backends import open_backend
from device_runners.cli import load_input
from device_runners.executor import run_single, warm_up
from device_runners.manifest import load_bundle
from device_runners.power.estimated import EstimatedPower
from device_runners.power.sampler import PowerSampler
from device_runners.profiles import load_profile

GOAL_RATIO = 1.02


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--input", type=Path, default=None, help=".npz with x (default: golden)")
    p.add_argument("--profile", default="generic-x86_64")
    p.add_argument("--blocks", type=int, default=30)
    p.add_argument("--block-samples", type=int, default=3000,
                   help="samples per block and condition (inputs are cycled)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="JSON file for the numbers")
    a = p.parse_args(argv)

    bundle = load_bundle(a.bundle)
    backend = open_backend(bundle, None, a.threads)
    x, _ = load_input(bundle, a.input, None)
    x = x[np.arange(a.block_samples) % len(x)]
    profile = load_profile(a.profile)
    conditions: dict[str, float | None] = {"no sampler": None, "sampler, default period": 0.0,
                                           "sampler, 10 ms": 10.0}
    warm_up(bundle, backend, x, 50)
    rng = random.Random(a.seed)
    lat_ns: dict[str, list[np.ndarray]] = {c: [] for c in conditions}
    periods_ms: dict[str, float | None] = {}
    n_power_samples: dict[str, int] = {c: 0 for c in conditions}
    t0 = time.monotonic()
    for _ in range(a.blocks):
        order = list(conditions)
        rng.shuffle(order)
        for cond in order:
            period = conditions[cond]
            sampler = None
            if period is not None:
                sampler = PowerSampler(EstimatedPower("/", profile=profile), period or None)
                periods_ms[cond] = sampler.period_ms
                sampler.start()
            rec, _ = run_single(bundle, backend, x, None)
            if sampler is not None:
                sampler.stop()
                n_power_samples[cond] += len(sampler.samples)
            lat_ns[cond].append(np.asarray([sum(v) for v in rec["segment_latency_ns"]], np.int64))
    base = [float(np.median(b)) for b in lat_ns["no sampler"]]
    out: dict[str, dict] = {}
    for cond, blocks in lat_ns.items():
        med = [float(np.median(b)) for b in blocks]
        ratios = [m / b for m, b in zip(med, base, strict=True)]
        pooled = np.concatenate(blocks)
        out[cond] = {"period_ms": periods_ms.get(cond), "median_latency_ns": float(np.median(pooled)),
                     "mean_latency_ns": float(pooled.mean()),
                     "p99_latency_ns": float(np.percentile(pooled, 99)),
                     "median_block_ratio": float(np.median(ratios)),
                     "block_ratio_p25_p75": [float(np.percentile(ratios, 25)),
                                             float(np.percentile(ratios, 75))],
                     "power_samples": n_power_samples[cond]}
    print(f"{a.blocks} interleaved blocks x {a.block_samples} samples per condition, "
          f"{time.monotonic() - t0:.0f} s; bundle {bundle.manifest['model']['name']}, "
          f"{backend.version()} x{a.threads}")
    print(f"{'condition':26s} {'period':>8s} {'p50 ms':>8s} {'mean ms':>8s} {'p99 ms':>8s} "
          f"{'ratio (median of blocks) [p25, p75]':>36s}")
    for cond, r in out.items():
        per = "-" if r["period_ms"] is None else f"{r['period_ms']:g} ms"
        lo, hi = r["block_ratio_p25_p75"]
        print(f"{cond:26s} {per:>8s} {r['median_latency_ns'] / 1e6:8.4f} "
              f"{r['mean_latency_ns'] / 1e6:8.4f} {r['p99_latency_ns'] / 1e6:8.4f} "
              f"{r['median_block_ratio']:14.4f} [{lo:.4f}, {hi:.4f}]")
    worst = max(r["median_block_ratio"] for r in out.values())
    print(f"worst median ratio {worst:.4f} (goal <= {GOAL_RATIO}): "
          f"{'OK' if worst <= GOAL_RATIO else 'ABOVE GOAL'}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"blocks": a.blocks, "block_samples": a.block_samples,
                                     "goal_ratio": GOAL_RATIO, "conditions": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
