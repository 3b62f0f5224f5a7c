"""Statistics the report computes from raw device samples: percentiles, energy over the run
window, the one-line power-source description, and achieved throughput against the profile.

Energy uses `device_runners.power.energy` (trapezoid rule, idle baseline subtracted) and is
labelled `estimated` whenever the power source is an estimate.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from device_runners.manifest import Bundle
from device_runners.power.energy import energy_summary, window_energy

PERCENTILES = (50, 90, 95, 99)
BYTES_NOTE = ("estimated: params x 4 bytes + the segment's input and output activations per "
              "sample; activations inside a segment are not counted (a lower bound)")


def percentiles(values: list[float] | np.ndarray) -> dict[str, float]:
    """p50/p90/p95/p99, mean, min, max and count; {} for no values."""
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return {}
    out = {f"p{p}": float(np.percentile(a, p)) for p in PERCENTILES}
    out.update(mean=float(a.mean()), max=float(a.max()), min=float(a.min()), count=int(a.size))
    return out


def power_line(power: dict[str, Any]) -> str:
    """One short line: which power source a run used and why (the runner's reason is long)."""
    source = power.get("source") or {}
    name = source.get("name")
    reason = str(power.get("reason") or "")
    if not name or name == "null":
        return "no power data: latency only" + (
            " (pass --profile NAME for a labelled estimate)" if "--profile" in reason else "")
    if source.get("is_estimate"):
        tried = re.findall(r"(?:\(|; )([a-z][a-z0-9_]*): ", reason)
        why = f"; no sensor readable (tried {', '.join(dict.fromkeys(tried))})" if tried else ""
        caveat = " ".join(source.get("caveats") or [])
        basis = ("the runner's CPU share" if "this process" in caveat
                 else "whole-machine CPU utilisation (older runner)")
        model = ""
        if source.get("idle_power_mw") is not None and source.get("max_power_mw") is not None:
            lo, hi = source["idle_power_mw"], source["max_power_mw"]
            model = f": idle {lo:.0f} mW + {basis} x ({hi:.0f} - {lo:.0f}) mW"
        return f"ESTIMATED from profile '{source.get('profile') or '?'}'{model}{why}"
    return f"measured by '{name}'"


def energy_of_run(results: dict[str, Any], units: int
                  ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(energy summary, power series for plots) of the run window; (None, None) without power.

    `units`: the inferences the window holds (samples or images)."""
    power = results.get("power") or {}
    stamps, totals = power.get("timestamp_ns") or [], power.get("total_mw") or []
    good = [(int(t), float(p)) for t, p in zip(stamps, totals, strict=False) if p is not None]
    window = power.get("window_ns") or [None, None]
    if len(good) < 2 or None in window:
        return None, None
    t_ns = np.array([t for t, _ in good], np.int64)
    p_mw = np.array([p for _, p in good], np.float64)
    start_ns, end_ns = int(window[0]), int(window[1])
    period_ms = power.get("period_ms")
    win = window_energy(t_ns, p_mw, start_ns, end_ns, period_ms=period_ms,
                        error_windows=[tuple(w) for w in power.get("error_windows_ns") or []])
    idle = power.get("idle") or {}
    is_estimate = bool(power.get("is_estimate"))
    summary = energy_summary(win, units, update_period_ms=float(power.get("update_period_ms") or
                                                                period_ms or 100.0),
                             idle_power_mw=idle.get("idle_power_mw"), is_estimate=is_estimate)
    source = power.get("source") or {}
    summary["warnings"] = [*summary["warnings"], *(idle.get("warnings") or [])]
    summary.update(source=source.get("name"), reason=power.get("reason"),
                   caveats=list(source.get("caveats") or []), window_ns=[start_ns, end_ns])
    markers = {m["label"]: int(m["timestamp_ns"]) for m in power.get("markers") or []}
    t0 = int(t_ns.min())
    series = {"t_s": (t_ns - t0) / 1e9, "power_mw": p_mw, "is_estimate": is_estimate,
              "run_s": ((start_ns - t0) / 1e9, (end_ns - t0) / 1e9),
              "idle_s": None, "idle_power_mw": idle.get("idle_power_mw")}
    if "idle_start" in markers and "idle_end" in markers:
        series["idle_s"] = ((markers["idle_start"] - t0) / 1e9, (markers["idle_end"] - t0) / 1e9)
    return summary, series


def activation_bytes(bundle: Bundle) -> list[tuple[int, int] | None]:
    """Per segment (input bytes, output bytes) of one sample, from the golden I/O shapes."""
    try:
        g = bundle.golden()
    except Exception:  # no golden file: bytes fall back to params only
        return [None] * len(bundle.segments)
    out: list[tuple[int, int] | None] = []
    prev = int(g["input"][0].nbytes) if "input" in g else None
    for seg in bundle.segments:
        arrays = [g.get(f"{seg['name']}/{o}") for o in seg.get("outputs", [])]
        if prev is None or any(a is None for a in arrays):
            out.append(None)
            prev = None
            continue
        out.append((prev, sum(int(a[0].nbytes) for a in arrays if a is not None)))
        feature = g.get(f"{seg['name']}/feature")
        prev = int(feature[0].nbytes) if feature is not None else None
    return out


def throughput(bundle: Bundle, seg_latency: list[dict[str, float]], profile: dict | None,
               expected_flops: float | None, mean_latency_ns: float | None) -> dict[str, Any]:
    """Achieved GFLOP/s and (estimated) GB/s per segment against the profile's peaks."""
    precision = str(bundle.manifest.get("precision", "fp32"))
    peak = bw = None
    if profile:
        peak = ((profile.get("peak_gflops") or {}).get("cpu") or {}).get(precision)
        bw = profile.get("memory_bandwidth_gbps")
    acts = activation_bytes(bundle)
    rows = []
    for i, seg in enumerate(bundle.segments):
        lat = seg_latency[i].get("p50") if i < len(seg_latency) else None
        params = seg.get("params")
        nbytes = None if params is None else 4 * int(params) + sum(acts[i] or (0, 0))
        gflops = seg["flops"] / lat if lat else None  # FLOP/ns == GFLOP/s
        gbps = nbytes / lat if lat and nbytes is not None else None  # byte/ns == GB/s
        rows.append({"segment": seg["name"], "exit_point": seg["exit"].get("point"),
                     "flops": int(seg["flops"]), "latency_p50_ns": lat, "achieved_gflops": gflops,
                     "peak_gflops": peak, "pct_of_peak": 100 * gflops / peak if gflops and peak
                     else None, "bytes_estimated": nbytes, "achieved_gbps_estimated": gbps,
                     "bandwidth_gbps": bw, "pct_of_bandwidth_estimated": 100 * gbps / bw
                     if gbps and bw else None})
    overall = None
    if expected_flops and mean_latency_ns:
        g = expected_flops / mean_latency_ns
        overall = {"achieved_gflops": g, "pct_of_peak": 100 * g / peak if peak else None}
    return {"precision": precision, "peak_gflops": peak, "bandwidth_gbps": bw,
            "segments": rows, "overall": overall, "bytes_note": BYTES_NOTE}
