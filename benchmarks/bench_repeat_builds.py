"""Three identical `edge-ee build --latency-aware` runs: do they choose the same exits?

    PYTHONPATH=. .venv/bin/python benchmarks/bench_repeat_builds.py \
        [--model ../shared/data/resnet-cifar10/resnet56.npz] \
        [--data bench-out/cifar10-train5000.zip] [--repeats 3] [--delta 0.1|none] \
        [--out bench-out/repeat-builds]

The literal check of issue 15: the same CLI command (`edge-ee build MODEL --data DATA --exit
lda:2 --latency-aware --calib-data test --calib-samples 5000 --max-drop 0.01 --delta 0.1`,
the README's ResNet command; `--data` a class-balanced 5000-image training zip from
`benchmarks/make_cifar_subset_zip.py`, so a build takes minutes on a shared 2-core
machine) run `--repeats` times as real subprocesses, one after the other, in a fresh
`$EDGE_EE_BOUNDARY_CACHE` folder (the first build measures and keeps its boundary costs,
the later ones measure again and keep or replace them: `edge_ee.hysteresis`). Per build:
the kept exits, the operating point (calibration and test), the worst-case bound and the
charged total, the charged fractions and whether the kept measurement was used, the
wall time and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT.parent / "shared/data/resnet-cifar10/resnet56.npz"),
                   help="the model (default: the shipped-data ResNet-56)")
    p.add_argument("--data", default="bench-out/cifar10-train5000.zip",
                   help="CIFAR-10 JPEG zip (default bench-out/cifar10-train5000.zip)")
    p.add_argument("--repeats", type=int, default=3, help="identical builds (default 3)")
    p.add_argument("--delta", default="0.1",
                   help="--delta of the builds, 'none' to leave it out (default 0.1)")
    p.add_argument("--out", type=Path, default=Path("bench-out/repeat-builds"),
                   help="folder for the bundles, the cache and the JSON (default "
                        "bench-out/repeat-builds)")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    cache = a.out / "boundary-cache"
    env = {**os.environ, "EDGE_EE_BOUNDARY_CACHE": str(cache), "OMP_NUM_THREADS": "2"}
    exe = Path(sys.executable).parent / "edge-ee"
    rows = []
    for k in range(a.repeats):
        out = a.out / f"build{k}"
        cmd = [str(exe), "-q", "build", "--model", a.model, "--data", a.data, "--exit", "lda:2",
               "--latency-aware", "--calib-data", "test", "--calib-samples", "5000",
               "--max-drop", "0.01", "--out", str(out), "--overwrite",
               *([] if a.delta == "none" else ["--delta", a.delta])]
        load0, t0 = os.getloadavg(), time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        secs = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"build {k} failed ({r.returncode}):\n{r.stderr[-3000:]}")
        cal = json.loads((out / "manifest.json").read_text())["calibration"]
        eo, ob = cal["exit_overhead"], cal["overhead_bound"]
        rows.append({"build": k, "seconds": secs, "load_before": load0, "load_after":
                     os.getloadavg(), "kept_exits": ob["kept_exits"],
                     "max_overhead": ob["max_overhead"], "charged": ob["charged"],
                     "point": {k2: cal["point"][k2] for k2 in ("cost_fraction", "accuracy")},
                     "test_point": {k2: cal["test_point"][k2]
                                    for k2 in ("cost_fraction", "accuracy")},
                     "full_accuracy": cal["full_accuracy"], "strategy": eo["strategy"],
                     "fraction": eo["fraction"], "raw_fraction": eo["raw_fraction"],
                     "kept_previous": (eo.get("hysteresis") or {}).get("kept_previous"),
                     "command": " ".join(cmd)})
        print(json.dumps(rows[-1], default=float), flush=True)
    same = all(r["kept_exits"] == rows[0]["kept_exits"] for r in rows)
    doc = {"same_exits": same, "builds": rows}
    (a.out / "repeat_builds.json").write_text(json.dumps(doc, indent=1, default=float))
    print(f"\nsame exits in all {len(rows)} builds: {same}")
    for r in rows:
        print(f"build {r['build']}: exits {r['kept_exits']} charged {r['charged']:.3f} "
              f"(bound {r['max_overhead']}); calibration cost {r['point']['cost_fraction']:.4f}"
              f" acc {r['point']['accuracy']:.4f}; test cost "
              f"{r['test_point']['cost_fraction']:.4f} acc {r['test_point']['accuracy']:.4f}; "
              f"kept previous: {r['kept_previous']}; {r['seconds']:.0f} s, load "
              f"{r['load_before'][0]:.1f}")


if __name__ == "__main__":
    main()
