"""Bundle execution strategies, registered by name: `split` segments or `ingraph` exits.

* `split` (every bundle): one graph per segment, the runner stops a unit between calls
  (`executor.execute`).
* `ingraph` (bundles whose manifest lists `strategies.ingraph`): one graph per input in
  which ONNX `If` nodes take the exits (`converters.ingraph`); one runtime call, outputs
  `prediction`, `confidence` and `exit` (the segment index each unit stopped at, the same
  record the split makes). Exits cannot be switched off at run time (`--no-exit` runs the
  split).

`choose` picks the strategy a run uses: the one asked for, or with `auto` the one a build
with a worst-case bound charged its exits for (`calibration.overhead_bound.strategy`: the
bound holds for that one), else the faster of the two measured on this runtime at start
(short, interleaved, median per call), and
returns the record results.json keeps (which one ran and why). `reference` turns a
chain's per-segment outputs into the end-to-end result both strategies must give (the
host's validation against torch and the device's golden self-check use it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from device_runners.backends import Backend
from device_runners.errors import BundleError, SelfCheckError
from device_runners.executor import Outcome, execute, granularity
from device_runners.golden import tolerances
from device_runners.manifest import Bundle

log = logging.getLogger(__name__)

INGRAPH = "ingraph"
CHOICES = ("auto", "split", INGRAPH)
# auto: calls of each strategy measured at start (after a warm-up), in interleaved rounds
AUTO_CALLS = 60
AUTO_ROUNDS = 4
AUTO_WARMUP = 3

Executor = Callable[..., Outcome]
STRATEGIES: dict[str, Executor] = {}


def register_strategy(name: str) -> Callable[[Executor], Executor]:
    def deco(fn: Executor) -> Executor:
        STRATEGIES[name] = fn
        return fn
    return deco


register_strategy("split")(execute)


@register_strategy(INGRAPH)
def execute_ingraph(bundle: Bundle, backend: Backend, x: np.ndarray, no_exit: bool = False,
                    clock: Any = time.perf_counter_ns) -> Outcome:
    """All units of `x` through the one in-graph-exit graph (one runtime call)."""
    if no_exit:
        raise BundleError("in-graph exits cannot be switched off at run time; --no-exit "
                          "measures the split (use --strategy split or auto)")
    t0 = clock()
    out = backend.run(INGRAPH, x)
    ns = clock() - t0
    return Outcome(out["exit"].astype(np.int64), out["prediction"].astype(np.int64),
                   out["confidence"].astype(np.float32), [ns], [len(x)])


def available(bundle: Bundle, backend: Backend) -> list[str]:
    """The strategies this bundle carries for the backend's file format."""
    out = ["split"]
    entry = bundle.strategy_graphs.get(INGRAPH)
    if entry and backend.file_format in entry["files"] and granularity(bundle) == "sample":
        out.append(INGRAPH)
    return out


def reference(outs: Sequence[Mapping[str, np.ndarray]], thresholds: Sequence[float | None],
              band: float) -> dict[str, np.ndarray]:
    """The end-to-end result of a sample-exit chain from every segment's outputs for every
    unit (no early stop): per unit the first segment whose `exit` flag is set (else the
    last), its prediction and confidence, and `near`: some exit up to that one had its
    confidence within `band` of its threshold (the decision may flip there)."""
    n = len(outs[0]["prediction"])
    last = len(outs) - 1
    stop = np.full(n, last, np.int64)
    near = np.zeros(n, bool)
    running = np.ones(n, bool)
    for i, o in enumerate(outs[:-1]):
        thr = thresholds[i]
        if thr is not None:
            near |= running & (np.abs(o["confidence"].astype(np.float64) - thr) <= band)
        flag = o["exit"].astype(bool) & running
        stop[flag] = i
        running &= ~flag
    pred = np.stack([o["prediction"] for o in outs])[stop, np.arange(n)]
    conf = np.stack([o["confidence"] for o in outs])[stop, np.arange(n)]
    return {"exit": stop, "prediction": pred, "confidence": conf, "near": near}


def agreement(got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray],
              confidence_atol: float) -> dict[str, Any]:
    """How an in-graph result agrees with the chain's: exit and prediction agreement
    (units near a threshold may differ), worst confidence error where the exits agree."""
    same = got["exit"] == ref["exit"]
    ok_exit = same | ref["near"]
    ok_pred = (got["prediction"] == ref["prediction"]) | ~same | ref["near"]
    err = np.abs(got["confidence"].astype(np.float64) - ref["confidence"])[same]
    worst = float(err.max()) if err.size else 0.0
    return {"samples": len(same), "exit_agreement": float(ok_exit.mean()),
            "prediction_agreement": float(ok_pred.mean()),
            "exit_equal": float(same.mean()), "confidence_max_abs_err": worst,
            "passed": bool(ok_exit.all() and ok_pred.all() and worst <= confidence_atol)}


def segment_thresholds(segments: Sequence[Mapping[str, Any]], fmt: str | None = None
                       ) -> list[float | None]:
    """Each segment's exit threshold (manifest entries); with `fmt`, the files of that
    format's own where they carry one (`exit.thresholds_by_format`: int8 calibrated on its
    own scores). None: no exit (or never exits)."""
    out = []
    for s in segments:
        own = s["exit"].get("thresholds_by_format") or {}
        out.append(own[fmt] if fmt is not None and fmt in own else s["exit"].get("threshold"))
    return out


def thresholds_of(bundle: Bundle, fmt: str | None = None) -> list[float | None]:
    """`segment_thresholds` of a loaded bundle."""
    return segment_thresholds(bundle.segments, fmt)


def self_check_ingraph(bundle: Bundle, backend: Backend) -> dict[str, Any]:
    """The golden inputs one at a time through the in-graph graph must end where the chain
    of the backend's format ends (torch's golden outputs; an int8 format's own recorded
    ones, with its tolerances and own thresholds); raise `SelfCheckError` otherwise."""
    g = bundle.golden()
    tol = tolerances(bundle, backend)
    p = tol["prefix"]
    outs = [{k: g[f"{p}seg{s['index']}/{k}"] for k in s["outputs"]} for s in bundle.segments]
    ref = reference(outs, thresholds_of(bundle, backend.file_format), tol["confidence_atol"])
    x = g["input"]
    rows = [execute_ingraph(bundle, backend, x[n : n + 1]) for n in range(len(x))]
    got = {"exit": np.concatenate([r.exit for r in rows]),
           "prediction": np.concatenate([r.prediction for r in rows]),
           "confidence": np.concatenate([r.confidence for r in rows])}
    rec = agreement(got, ref, tol["confidence_atol"])
    if not rec["passed"]:
        raise SelfCheckError(f"the in-graph exit graph disagrees with torch's chain on the golden "
                             f"inputs ({rec}); run with --strategy split or re-export")
    return rec


def measure_both(bundle: Bundle, backend: Backend, x: np.ndarray, unit: int,
                 calls: int = AUTO_CALLS, rounds: int = AUTO_ROUNDS,
                 clock: Any = time.perf_counter_ns) -> dict[str, float]:
    """Median ns per call of split and in-graph on the first inputs: `rounds` rounds in
    which each strategy runs `calls / rounds` calls in turn (which goes first alternates;
    one unmeasured call first re-warms its weights, as in a run of that strategy alone)."""
    n = max(1, min(calls, -(-len(x) // unit)))
    chunks = [x[k * unit : (k + 1) * unit] for k in range(n)]
    per = max(1, n // rounds)
    times: dict[str, list[int]] = {"split": [], INGRAPH: []}
    for r in range(rounds):
        part = chunks[(r * per) % n :][:per] or chunks[:per]
        for name in (list(times) if r % 2 == 0 else list(times)[::-1]):
            fn = STRATEGIES[name]
            for _ in range(AUTO_WARMUP if r == 0 else 1):
                fn(bundle, backend, part[0])
            for c in part:
                t0 = clock()
                fn(bundle, backend, c)
                times[name].append(clock() - t0)
    return {name: float(np.median(v)) for name, v in times.items()}


def bound_strategy(bundle: Bundle) -> str | None:
    """The strategy a build with a worst-case bound (`edge-ee build --max-overhead`) charged
    its exits for, from the manifest's `calibration.overhead_bound`; None without a bound."""
    rec = (bundle.manifest.get("calibration") or {}).get("overhead_bound")
    if not isinstance(rec, dict) or rec.get("max_overhead") is None:
        return None
    name = rec.get("strategy")
    return name if name in STRATEGIES else None


def choose(bundle: Bundle, backend: Backend, x: np.ndarray, requested: str = "auto",
           unit: int = 1, no_exit: bool = False) -> tuple[str, dict[str, Any]]:
    """The strategy to run and the record of why (for results.json)."""
    if requested not in CHOICES:
        raise BundleError(f"unknown strategy {requested!r}; choose from {CHOICES}")
    have = available(bundle, backend)
    rec: dict[str, Any] = {"requested": requested, "available": have}
    if requested == INGRAPH:
        if INGRAPH not in have:
            raise BundleError(f"this bundle carries no in-graph exits for {backend.file_format!r} "
                              f"(it has {have}); use --strategy split or auto, or rebuild the "
                              "bundle with ONNX")
        if no_exit:
            raise BundleError("--no-exit cannot switch in-graph exits off; use --strategy split")
        return INGRAPH, {**rec, "name": INGRAPH, "reason": "requested with --strategy"}
    if requested == "split" or INGRAPH not in have:
        why = "requested with --strategy" if requested == "split" else (
            f"the bundle carries no in-graph exits for {backend.file_format!r}")
        return "split", {**rec, "name": "split", "reason": why}
    if no_exit:
        return "split", {**rec, "name": "split",
                         "reason": "--no-exit measures the split (in-graph exits stay on)"}
    charged = bound_strategy(bundle)
    if charged in have:  # the worst-case bound was charged for this one: run it
        return charged, {**rec, "name": charged, "reason": (
            "the strategy whose per-exit costs the build charged under its worst-case bound "
            "(calibration.overhead_bound)")}
    if not len(x):
        return "split", {**rec, "name": "split", "reason": "no inputs to measure"}
    med = measure_both(bundle, backend, x, unit)
    name = INGRAPH if med[INGRAPH] < med["split"] else "split"
    log.info("strategy: split %.0f ns, in-graph %.0f ns per call -> %s", med["split"],
             med[INGRAPH], name)
    return name, {**rec, "name": name, "reason": "faster measured at start on this runtime",
                  "measured_median_ns": med, "unit": unit, "measured_calls": int(
                      max(1, min(AUTO_CALLS, -(-len(x) // unit)) // AUTO_ROUNDS) * AUTO_ROUNDS)}
