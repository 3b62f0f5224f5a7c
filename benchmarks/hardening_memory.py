"""Memory per inference of edge-ee-run's sample records: a real run, and the storage alone.

1. Real runs of `edge-ee-run` (single mode, one sample at a time) on a small bundle, with
   `--min-runs 1000` and `--min-runs N`: bytes per inference = difference of the child's
   peak RSS / (N - 1000). This is the runner as it is (records in lists, session.py).
2. The storage alone, in fresh subprocesses: N records shaped like run_single's (exit,
   prediction, confidence, label, pass, segment latencies) held in Python lists, vs the
   same records appended to `device_runners.spool.Spool` (flushed to disk every 4096 rows).

  PYTHONPATH=. python benchmarks/hardening_memory.py BUNDLE INPUT.npz [--runs 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

STORE = r'''
import resource, sys, random
n, kind, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = ({"exit": i % 4, "prediction": i % 10, "confidence": random.random(), "label": i % 10,
         "pass": i // 200, "segment_latency_ns": [random.randrange(10**5, 10**6)
                                                  for _ in range(i % 4 + 1)]} for i in range(n))
if kind == "lists":
    rec = {}
    for r in rows:
        for k, v in r.items():
            rec.setdefault(k, []).append(v)
else:
    from device_runners.spool import Spool
    sp = Spool(path)
    for r in rows:
        sp.append(r)
    sp.close()
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
'''


def _child_rss_kib(cmd: list[str]) -> int:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if after <= before:
        raise SystemExit("peak RSS of the child not above earlier children; run sizes in order")
    return after


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("input")
    ap.add_argument("--runs", type=int, default=100_000)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    print(f"N = {a.runs} inferences")
    # 2. storage alone
    for kind in ("lists", "spool"):
        out = subprocess.run([sys.executable, "-c", STORE, str(a.runs), kind, str(tmp / "s")],
                             check=True, capture_output=True, text=True).stdout.split()
        base, peak = int(out[0]), int(out[1])
        disk = (tmp / "s").stat().st_size if kind == "spool" else 0
        print(f"storage {kind:5s}: +{(peak - base) * 1024 / a.runs:6.1f} B/inference in memory"
              + (f", {disk / a.runs:.1f} B/inference on disk" if disk else ""))
    # 1. real runs (the smaller first: RUSAGE_CHILDREN keeps the maximum)
    rss = {}
    for n in (1000, a.runs):
        out = tmp / f"r{n}.json"
        cmd = [sys.executable, "-m", "device_runners.cli", a.bundle, "--input", a.input, "--out",
               str(out), "--min-runs", str(n), "--idle-s", "0", "--power-source", "null",
               "--profile", "none", "--warmup-runs", "1", "--quiet"]
        rss[n] = _child_rss_kib(cmd)
        rec = json.loads(out.read_text())
        print(f"edge-ee-run --min-runs {n}: {len(rec['samples']['exit'])} inferences, peak RSS "
              f"{rss[n] / 1024:.1f} MiB (at results_document: {rec['peak_rss_kib'] / 1024:.1f} MiB)")
    per = (rss[a.runs] - rss[1000]) * 1024 / (a.runs - 1000)
    print(f"edge-ee-run: {per:.0f} B/inference (peak RSS incl. the final JSON write)")


if __name__ == "__main__":
    main()
