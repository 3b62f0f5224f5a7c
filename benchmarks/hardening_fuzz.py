"""What the fuzzers of tests/test_fuzz.py find: the same properties run against a given
`device_runners` tree, counting examples that end in an untyped exception (a traceback
for a user) or a silently accepted non-finite/negative number.

  PYTHONPATH=<tree> python benchmarks/hardening_fuzz.py [--examples N]

Run it once with the tree before issue 11 (e.g. `git archive 4b77811 device_runners
hardware_profiles | tar -x -C /tmp/old`) and once with this checkout; both use the same
derandomised examples.
"""

from __future__ import annotations

import argparse
import collections
import copy
import io
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers_fuzz import MANIFEST, PROFILE, RESULTS, _mutate

import device_runners
from device_runners.errors import EdgeEEError

TALLY: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
EXAMPLE: dict[str, str] = {}


def _record(target: str, fn) -> None:
    try:
        ok = fn()
    except EdgeEEError:
        TALLY[target]["typed error"] += 1
        return
    except Exception as err:  # what a user would see as a traceback
        TALLY[target]["traceback"] += 1
        TALLY[target][f"  {type(err).__name__}"] += 1
        return
    TALLY[target]["accepted" if ok is not False else "silently wrong"] += 1
    if ok is False and target.startswith("results"):
        TALLY[target]["  (example) " + EXAMPLE.get("last", "")[:300]] += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=300)
    n = ap.parse_args().examples
    cfg = settings(max_examples=n, deadline=None, derandomize=True, database=None)
    from device_runners.manifest import validate_manifest
    from device_runners.power.meter_csv import UsbMeterCsv
    from device_runners.profiles import parse_profile
    from device_runners.results import load_results
    tmp = Path(tempfile.mkdtemp())
    base_profile = copy.deepcopy(PROFILE)
    try:
        parse_profile(base_profile, "base")
    except EdgeEEError:  # a tree before issue 11 knows power_mode.check_command, not tool
        pm = base_profile["power_mode"]
        pm["check_command"] = "nvpmodel -q" if pm.pop("tool", None) else None

    @cfg
    @given(data=st.data())
    def manifest(data):
        _record("manifest (one field replaced)", lambda: validate_manifest(_mutate(MANIFEST, data)))

    @cfg
    @given(data=st.data())
    def results(data):
        doc = _mutate(RESULTS, data)
        p = tmp / "r.json"
        p.write_text(json.dumps(doc))
        EXAMPLE["last"] = json.dumps({k: doc.get(k) for k in ("samples", "power")}
                                     if isinstance(doc, dict) else doc)
        _record("results (one field replaced)", lambda: bool(load_results(p)) and _results_ok(doc))

    @cfg
    @given(data=st.data())
    def profile(data):
        def run():
            p = parse_profile(_mutate(base_profile, data), "fuzz")
            return all(math.isfinite(v) and v >= 0 for v in
                       (p.idle_power_mw, p.max_power_mw, p.memory_bandwidth_gbps))
        _record("profile (one field replaced)", run)

    @cfg
    @given(rows=st.lists(st.tuples(st.floats(), st.floats()), min_size=1, max_size=6))
    def meter(rows):
        p = tmp / "m.csv"
        p.write_text("timestamp_s,power_w\n" + "".join(f"{t},{w}\n" for t, w in rows))

        def run():
            src = UsbMeterCsv(csv_path=str(p), timestamps_are_wall_clock=False)
            src.open()
            raw = src._rows()
            pts = src.load_samples()
            finite = all(math.isfinite(w) and w >= 0 for _, w in pts)
            in_order = [t for t, _ in raw] == sorted(t for t, _ in raw)
            return finite and in_order
        _record("meter CSV rows", run)

    good = io.BytesIO()
    np.savez(good, x=np.zeros((2, 28, 28, 1), np.uint8), y=np.array([0, 1]))
    good_b = good.getvalue()

    @cfg
    @given(cut=st.integers(0, len(good_b)), flips=st.lists(
        st.tuples(st.integers(0, len(good_b) - 1), st.integers(0, 255)), max_size=4))
    def inputs(cut, flips):
        raw = bytearray(good_b)
        for pos, val in flips:
            raw[pos] = val
        p = tmp / "x.npz"
        p.write_bytes(bytes(raw[:cut]))
        _record("input .npz (bytes cut/flipped)", lambda: _load_input(p))

    for fn in (manifest, results, profile, meter, inputs):
        fn()
    print(f"device_runners from {Path(device_runners.__file__).parent}, {n} examples per parser")
    for target, c in TALLY.items():
        print(f"{target}: " + ", ".join(f"{k.strip()} {v}" for k, v in sorted(c.items())
                                         if not k.startswith("  ")))
        details = {k.strip(): v for k, v in c.items() if k.startswith("  ")}
        if details:
            print(f"    untyped: {details}")


def _results_ok(doc) -> bool:
    """A results file the report will read: sample columns of numbers, powers finite."""
    s = doc.get("samples")
    pw = doc.get("power") or {}
    try:
        return (isinstance(s, dict) and all(isinstance(v, list) for v in s.values())
                and all(isinstance(v, (int, type(None))) and not isinstance(v, bool)
                        for v in s.get("exit", []))
                and all(w is None or (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0)
                        for w in pw.get("total_mw") or []))
    except Exception:
        return False


def _load_input(p: Path):
    from device_runners.manifest import Bundle
    b = Bundle(p.parent, copy.deepcopy(MANIFEST), "")
    try:
        from device_runners.inputs import load_input
    except ImportError:  # before issue 11
        from device_runners.cli import load_input
    load_input(b, p, None)
    return True


if __name__ == "__main__":
    main()
