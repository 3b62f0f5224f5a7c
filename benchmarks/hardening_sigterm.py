"""SIGTERM at random moments: does edge-ee-run keep what it measured every time?

Starts `edge-ee-run BUNDLE --input X --min-duration-s 60` ten times and sends SIGTERM
after a random delay (uniform over --from-s..--to-s, seeded), then checks: exit code 143,
results.json present, strict JSON, marked incomplete with `interrupted_by: SIGTERM`, the
sample columns of equal length, no spool left behind. A signal that lands before the
measured window (imports, bundle check, warm-up) must end with 143 and "nothing was
written" (nothing had been measured); one during Python's imports, before the handlers
exist, ends the process by the default action (nothing had been measured either).

  PYTHONPATH=. python benchmarks/hardening_sigterm.py BUNDLE INPUT.npz [--tries 10]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("input")
    ap.add_argument("--tries", type=int, default=10)
    ap.add_argument("--from-s", type=float, default=1.0)
    ap.add_argument("--to-s", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    tmp = Path(tempfile.mkdtemp())
    kept = lost = 0
    for i in range(a.tries):
        out = tmp / f"r{i}.json"
        delay = rng.uniform(a.from_s, a.to_s)
        proc = subprocess.Popen([sys.executable, "-m", "device_runners.cli", a.bundle, "--input",
                                 a.input, "--out", str(out), "--min-duration-s", "60", "--idle-s",
                                 "1", "--power-source", "null"], stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        spool_left = (tmp / f".r{i}.json.spool").exists()
        if out.exists():
            text = out.read_text()
            r = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
            n = {len(v) for v in r["samples"].values()}
            ok = (proc.returncode == 143 and r["complete"] is False and len(n) <= 1
                  and r.get("interrupted_by") == "SIGTERM" and not spool_left)
            kept += ok
            lost += not ok
            print(f"try {i}: SIGTERM after {delay:5.2f} s -> exit {proc.returncode}, results kept: "
                  f"{n.pop() if n else 0} samples, incomplete, {'OK' if ok else 'WRONG'}")
        else:
            # before the handlers exist (Python still importing) the default action ends
            # the process: nothing had been measured, nothing is lost
            before = ("nothing was written" in err and proc.returncode == 143) or (
                proc.returncode == -signal.SIGTERM and "manifest sha256" not in err)
            lost += not before
            print(f"try {i}: SIGTERM after {delay:5.2f} s -> exit {proc.returncode}, before the "
                  f"measured window ({'OK' if before else 'LOST: ' + err[-300:]})")
    print(f"{a.tries} tries: results kept {kept}, stopped before measuring "
          f"{a.tries - kept - lost}, lost {lost}")


if __name__ == "__main__":
    main()
