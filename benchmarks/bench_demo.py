"""The demo network, side by side in one run (issue 15 item 5 evidence).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_demo.py [--out DIR]

Builds exactly what `edge-ee demo` builds (`edge_ee.demo.build_demo`: shipped
fashion-resnet, E2CM exits fitted on a class-balanced 12000-image training sample,
boundary costs measured on this host and charged in the threshold search, ≤ 1 point
calibration drop), then measures:
* accuracy and FLOPs fraction on the **whole** 10000-image test split (torch, the same
  decisions the bundle makes);
* p50 latency of full / early-exit / split-with-exits-off, **interleaved** sample by
  sample through the runner's own `run_single` (1 onnxruntime thread) on a
  class-balanced `--samples` test sample, as ratios to the full network;
* estimated energy per inference (the runner's `estimated` power source where there is
  no sensor) of full and early-exit, from two `edge-ee-run` runs;
* `--builds` repeated latency-aware threshold choices (boundary costs re-measured each
  time, same heads): do they keep the same exits?
The machine is shared: the load average is recorded before and after, and only ratios
measured side by side are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    import torch
    from bench_e2cm_resnet56 import interleaved_latency

    from edge_ee.boundary import measure_boundaries
    from edge_ee.demo import DemoConfig, build_demo, run_bundles
    from edge_ee.pipeline import choose_thresholds, evaluate_split

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench-demo"))
    p.add_argument("--samples", type=int, default=2000, help="class-balanced latency sample")
    p.add_argument("--builds", type=int, default=3, help="repeated latency-aware choices")
    a = p.parse_args()
    torch.set_num_threads(2)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    cfg = DemoConfig(out=str(a.out), samples=a.samples)
    b = build_demo(cfg)
    kept = [i for i, h in enumerate(b.fitted.heads) if h is not None and h.enabled]
    thresholds = np.asarray(b.fitted.chosen.thresholds)
    whole = evaluate_split(b.net, b.fitted.heads, b.test, b.fitted.costs)
    on_whole = whole.evaluate(thresholds)
    print(f"whole test split: accuracy {on_whole.accuracy:.4f} vs full {whole.full_accuracy:.4f}"
          f", FLOPs fraction {on_whole.cost_fraction:.3f}, kept exits {kept}", flush=True)
    lat = interleaved_latency({"full": b.full, "early-exit": b.bundle,
                               "split, exits off": b.bundle}, b.sample.images,
                              {"split, exits off"})
    med = lat["median_ns"]
    sums = run_bundles(b, a.out)
    energy = [s.get("energy") or {} for s in sums]
    e_full, e_ee = (e.get("energy_per_inference_mj") for e in energy)
    repeats = []
    for r in range(a.builds):
        m = measure_boundaries(b.net, b.fitted.heads, b.fitted.costs.full_flops,
                               b.fitted.costs.head_flops)
        cfg_r = replace(b.fitted.config, exit_overhead_flops=m.overhead_flops)
        for h in b.fitted.heads:  # choose_thresholds sets every head afresh
            if h is not None:
                h.set_threshold(float("inf"))
        point = choose_thresholds(b.fitted, cfg_r, progress=False)
        repeats.append({"fraction": list(m.fraction), "raw_fraction": list(m.raw_fraction),
                        "kept": [i for i, h in enumerate(b.fitted.heads)
                                 if h is not None and h.enabled],
                        "cost_fraction": point.cost_fraction, "accuracy": point.accuracy})
        print(f"build {r + 1}: boundary fractions {m.fraction} (raw "
              f"{[round(v, 3) for v in m.raw_fraction]}), kept {repeats[-1]['kept']}", flush=True)
    doc = {
        "model": cfg.model, "exit_spec": b.fitted.config.exit_spec.label, "kept_exits": kept,
        "test_split": {"samples": len(b.test), "accuracy": on_whole.accuracy,
                       "full_accuracy": whole.full_accuracy,
                       "flops_fraction": on_whole.cost_fraction},
        "latency": {"samples": len(b.sample), "median_ns": med,
                    "p50_fraction_early_exit": med["early-exit"] / med["full"],
                    "split_overhead_exits_off": med["split, exits off"] / med["full"],
                    "flops_fraction_these_samples": lat["flops_fraction_these_samples"]},
        "energy": {"label": "estimated" if any(e.get("is_estimate") for e in energy) else
                   "measured", "source": energy[1].get("source"),
                   "per_inference_mj": {"full": e_full, "early-exit": e_ee},
                   "fraction": (e_ee / e_full) if e_full and e_ee else None},
        "runner_p50_ns": {"full": (sums[0].get("latency_ns") or {}).get("p50"),
                          "early-exit": (sums[1].get("latency_ns") or {}).get("p50")},
        "boundary_host": b.fitted.exit_overhead, "repeated_builds": repeats,
        "same_exits_every_build": len({tuple(r["kept"]) for r in repeats}) <= 1,
        "load_average_before": load0, "load_average_after": os.getloadavg(),
        "cores": os.cpu_count(), "seconds": time.perf_counter() - t0,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    tmp = a.out / "bench_demo.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=float))
    tmp.replace(a.out / "bench_demo.json")
    print(f"\n| | accuracy (whole test) | FLOPs fraction | p50 latency fraction | "
          f"energy fraction ({doc['energy']['label']}) |\n|---|---|---|---|---|\n"
          f"| full | {whole.full_accuracy:.4f} | 1 | 1 | 1 |\n"
          f"| early-exit (exits {kept}) | {on_whole.accuracy:.4f} | "
          f"{on_whole.cost_fraction:.3f} | {doc['latency']['p50_fraction_early_exit']:.3f} | "
          + (f"{doc['energy']['fraction']:.3f}" if doc['energy']['fraction'] else "n/a") + " |\n"
          f"| split, exits off | {whole.full_accuracy:.4f} | "
          f"{1 + sum(b.fitted.costs.head_flops[i] for i in kept) / b.fitted.costs.full_flops:.3f}"
          f" | {doc['latency']['split_overhead_exits_off']:.3f} | |\n"
          f"full p50 {med['full'] / 1e6:.3f} ms; same exits in {a.builds} builds: "
          f"{doc['same_exits_every_build']}; load average {load0[0]:.1f} → "
          f"{doc['load_average_after'][0]:.1f} on {os.cpu_count()} cores; "
          f"{doc['seconds']:.0f} s; wrote {a.out / 'bench_demo.json'}")


if __name__ == "__main__":
    main()
