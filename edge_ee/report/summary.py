"""`summarize`: one statistics path for every task, forked only by the registered metric.

From a raw results.json and the bundle that was run it computes what the device only
recorded: the task metric (`edge_ee.report.metrics`), exit histogram, latency percentiles
(end to end and per segment), expected FLOPs per unit from the exits taken, energy over the
run window (labelled `estimated` when the power source is an estimate), achieved
throughput against the profile, and the manifest's calibration record (operating points,
threshold-sweep curves, the certified risk bound and risk curve, the calibration source).
"""

from __future__ import annotations

from typing import Any

from device_runners.manifest import Bundle
from edge_ee.errors import ResultsError
from edge_ee.report.metrics import metric_for
from edge_ee.report.stats import energy_of_run, percentiles, power_line, throughput

CERTIFICATE_KEYS = ("epsilon", "delta", "bound", "n", "certified", "tested", "point",
                    "empirical_risk", "risk_upper_bound", "samples_needed")


def summarize(results: dict[str, Any], bundle: Bundle) -> dict[str, Any]:
    """Statistics of one run; refuses results that came from another bundle.

    The key `series` holds raw arrays for the figures; it is left out of report.json.
    """
    if results["bundle"]["manifest_sha256"] != bundle.manifest_sha256:
        raise ResultsError(
            f"results were recorded with bundle {results['bundle']['manifest_sha256'][:12]}…, "
            f"not {bundle.manifest_sha256[:12]}… ({bundle.root}); pass the bundle that was run")
    metric = metric_for(bundle.manifest)
    scored = metric.score(results, bundle)
    m, segs, s = bundle.manifest, bundle.segments, results["samples"]
    flops = scored.flops_per_unit
    n = scored.units
    full = float((m.get("cost") or {}).get("full_flops") or sum(sg["flops"] for sg in segs))
    no_exit = bool(results["protocol"].get("no_exit", False))
    model = m.get("model") or {}
    variant = model.get("variant") or ("monolithic" if len(segs) == 1 else "early-exit")
    total_exits = max(sum(scored.exit_counts), 1)
    prof = results.get("profile") or {}
    out: dict[str, Any] = {
        "task": model.get("task") or "classification",
        "metric": {"name": metric.name, "label": metric.label, "value": scored.value,
                   "unit": metric.unit, "exit_unit": metric.exit_unit,
                   "granularity": metric.granularity},
        metric.name: scored.value,
        "model": results["bundle"]["model"],
        "variant": variant + (" (--no-exit)" if no_exit else ""),
        "backend": results["backend"],
        "mode": results["protocol"]["mode"],
        "no_exit": no_exit,
        "complete": results["complete"],
        "samples": n,
        "segment_names": [sg["name"] for sg in segs],
        "exit_points": [sg["exit"].get("point") for sg in segs],
        "exit_histogram": {segs[i]["exit"].get("point"): int(c)
                           for i, c in enumerate(scored.exit_counts) if i < len(segs)},
        "exit_fractions": [c / total_exits for c in scored.exit_counts],
        "expected_flops": float(flops.mean()) if len(flops) else None,
        "full_flops": full,
        "cost_fraction": float(flops.mean() / full) if len(flops) else None,
        "init_ns": results.get("init_ns"),
        "first_inference_ns": results.get("first_inference_ns"),
        "peak_rss_kib": results.get("peak_rss_kib"),
        # None for results from before the field: whose RSS it was is unknown
        "peak_rss_torch_loaded": (results.get("peak_rss_process") or {}).get("torch_loaded"),
        "profile": {"name": prof.get("name"), "how": prof.get("how"),
                    "warnings": list(prof.get("warnings") or [])},
        "power_line": power_line(results.get("power") or {}),
        "calibration": calibration_of(m),
        **scored.detail,
    }
    series: dict[str, Any] = {"latency_ns": [], "segment_latency_ns": [[] for _ in segs],
                              **scored.series}
    strategy = results.get("strategy") or {}
    out["strategy"] = {k: strategy.get(k) for k in ("name", "reason", "measured_median_ns")
                       if k in strategy} or None
    if s.get("segment_latency_ns"):
        lat = s.get("latency_ns") or [sum(v) for v in s["segment_latency_ns"]]
        out["latency_ns"] = percentiles(lat)
        series["latency_ns"] = list(lat)
        if strategy.get("name") != "ingraph":  # one call per sample: no per-segment times
            per_seg = [[v[i] for v in s["segment_latency_ns"] if len(v) > i]
                       for i in range(len(segs))]
            out["segment_latency_ns"] = [percentiles(v) for v in per_seg]
            series["segment_latency_ns"] = per_seg
    if s.get("assemble_latency_ns") and not (m.get("segmentation") or {}).get("monolithic"):
        out["assemble_latency_ns"] = percentiles(s["assemble_latency_ns"])
    if results.get("batches") and "latency_ns" not in out:
        tot = sum(sum(b["segment_latency_ns"]) + b.get("assemble_latency_ns", 0)
                  for b in results["batches"])
        out["batch_latency_ns_per_sample"] = tot / max(n, 1)
    mean_lat = out.get("latency_ns", {}).get("mean") or out.get("batch_latency_ns_per_sample")
    out["throughput"] = throughput(bundle, out.get("segment_latency_ns", []),
                                   prof.get("profile"), out["expected_flops"], mean_lat) \
        if metric.granularity == "sample" else None
    units = len(s.get("exit") or s.get("image") or []) or n
    out["energy"], series["power"] = energy_of_run(results, units)
    out["series"] = series
    return out


def _points(raw: Any) -> list[dict[str, float]]:
    """Curve points from [[cost, acc], ...], [{"cost_fraction", "accuracy", ...}, ...] or
    {"cost_fraction": [...], "accuracy": [...]}, sorted by cost."""
    if isinstance(raw, dict):
        raw = list(zip(raw.get("cost_fraction", []), raw.get("accuracy", []), strict=False))
    pts = []
    for p in raw or []:
        if isinstance(p, dict) and "cost_fraction" in p and "accuracy" in p:
            pts.append({"cost_fraction": float(p["cost_fraction"]), "accuracy": float(p["accuracy"])})
        elif isinstance(p, (list, tuple)) and len(p) >= 2:
            pts.append({"cost_fraction": float(p[0]), "accuracy": float(p[1])})
    return sorted(pts, key=lambda p: p["cost_fraction"])


def _risk_curve(raw: Any) -> list[dict[str, float]]:
    """[[cost_fraction, empirical_risk, upper_bound], ...] → sorted dicts; bad rows skipped."""
    pts = []
    for p in raw or []:
        if isinstance(p, (list, tuple)) and len(p) >= 3 and all(
                isinstance(v, (int, float)) for v in p[:3]):
            pts.append({"cost_fraction": float(p[0]), "empirical_risk": float(p[1]),
                        "upper_bound": float(p[2])})
    return sorted(pts, key=lambda p: p["cost_fraction"])


def calibration_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's calibration record as the report shows it.

    `curve` is {"calibration": [[cost_fraction, accuracy], ...], "test": [...]} (a bare list
    is the calibration split); `certificate`, `risk_curve` and `source` are the certified-
    threshold record when the bundle has one (else None / [])."""
    cal = manifest.get("calibration") or {}
    curve = cal.get("curve")
    if isinstance(curve, dict) and not {"cost_fraction", "accuracy"} <= set(curve):
        curves = {str(k): _points(v) for k, v in curve.items()}
    else:
        curves = {"calibration": _points(curve)}
    cert = cal.get("certificate")
    cert = {k: cert.get(k) for k in CERTIFICATE_KEYS} if isinstance(cert, dict) else None
    source = cal.get("source") if isinstance(cal.get("source"), dict) else None
    known = {"curve", "certificate", "risk_curve", "source", "split", "point", "test_point",
             "full_accuracy"}
    return {"curves": {k: v for k, v in curves.items() if v}, "split": cal.get("split"),
            "point": cal.get("point"), "test_point": cal.get("test_point"),
            "full_accuracy": cal.get("full_accuracy"), "certificate": cert,
            "risk_curve": _risk_curve(cal.get("risk_curve")), "source": source,
            "settings": {k: v for k, v in cal.items() if k not in known
                         and isinstance(v, (str, int, float, bool))}}


def baseline_index(sums: list[dict[str, Any]]) -> int:
    """The run the ratios are taken against: the first monolithic run, else the first."""
    return next((i for i, s in enumerate(sums) if s["variant"] == "monolithic"), 0)


def measured_drop(sums: list[dict[str, Any]], i: int) -> float | None:
    """Metric drop of run i against the full network: the baseline run when it is a
    monolithic one, else the manifest's full-network accuracy on the test split."""
    v = sums[i]["metric"]["value"]
    b = baseline_index(sums)
    if v is None:
        return None
    if b != i and sums[b]["variant"] == "monolithic" and sums[b]["metric"]["value"] is not None:
        return sums[b]["metric"]["value"] - v
    full = sums[i]["calibration"].get("full_accuracy")
    if isinstance(full, dict) and full.get("test") is not None:
        return float(full["test"]) - v
    return None


def as_json(s: dict[str, Any]) -> dict[str, Any]:
    """A summary without its raw series (what report.json holds)."""
    return {k: v for k, v in s.items() if k != "series"}


__all__ = ["as_json", "baseline_index", "calibration_of", "measured_drop", "summarize"""]
