"""Issue-16 evidence: the estimated power model follows the runner's own CPU time, so a
CPU-bound process beside the runner must not become the bundle's energy.

Runs `edge-ee-run` on one bundle with `--power-source estimated`, alternating alone and
with a CPU-bound Python process (`while True: pass`) beside it, `--repeats` times each,
and prints per run: idle power, mean power, energy per inference (total and above idle)
and p50 latency, then the ratio loaded / alone of the medians. Goal: within 10 %.

    python benchmarks/bench_estimated_power_isolation.py BUNDLE SAMPLES.npz [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from device_runners.manifest import load_bundle
from device_runners.results import load_results
from edge_ee.report import summarize


def run_once(bundle: Path, samples: Path, out: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "device_runners.cli", str(bundle), "--input", str(samples),
           "--out", str(out), "--profile", args.profile, "--power-source", "estimated",
           "--idle-s", str(args.idle_s), "--min-duration-s", str(args.duration_s), "--quiet"]
    subprocess.run(cmd, check=True)
    s = summarize(load_results(out), load_bundle(bundle))
    e = s["energy"]
    return {"idle_power_mw": e["idle_power_mw"], "mean_power_mw": e["mean_power_mw"],
            "energy_per_inference_mj": e["energy_per_inference_mj"],
            "above_idle_per_inference_mj": e["above_idle_energy_per_inference_mj"],
            "latency_p50_ms": s["latency_ns"]["p50"] / 1e6, "samples": s["samples"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("samples", type=Path)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--profile", default="generic-x86_64")
    ap.add_argument("--idle-s", type=float, default=1.0)
    ap.add_argument("--duration-s", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    a = ap.parse_args()
    rows: dict[str, list[dict]] = {"alone": [], "beside a CPU-bound process": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            for kind in rows:
                hog = None
                if kind != "alone":
                    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                try:
                    row = run_once(a.bundle, a.samples, Path(tmp) / f"{r}.json", a)
                finally:
                    if hog is not None:
                        hog.kill()
                        hog.wait()
                rows[kind].append(row)
                print(f"{kind:28s} " + " ".join(f"{k}={v:.4g}" for k, v in row.items()),
                      flush=True)
    med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in rows.items()}
    alone, loaded = med["alone"], med["beside a CPU-bound process"]
    for f in ("idle_power_mw", "mean_power_mw", "energy_per_inference_mj",
              "above_idle_per_inference_mj", "latency_p50_ms"):
        print(f"median {f}: alone {alone[f]:.4g}, beside a CPU hog {loaded[f]:.4g}, "
              f"ratio {loaded[f] / alone[f]:.3f}")
    if a.out:
        a.out.write_text(json.dumps({"runs": rows, "median": med}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
