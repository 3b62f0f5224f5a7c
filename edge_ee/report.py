"""`edge-ee report`: statistics from raw results.json + the bundle's manifest + the profile.

Computes on the host what the device only recorded: accuracy, exit histogram, latency
percentiles (end-to-end and per segment), expected FLOPs per sample from the exits taken,
energy over the run window (trapezoid rule via `device_runners.power.energy`, idle
baseline subtracted, labelled `estimated` whenever the power source is an estimate),
achieved throughput against the profile's peak GFLOPS and memory bandwidth, and the
accuracy-versus-cost operating points (the manifest's calibration curve when it has one).
`write_report` writes every table (`report_tables`) as Markdown, CSV and JSON, the figures
(`report_plots`, PNG) and one self-contained HTML page (`report_html`) side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from device_runners.manifest import Bundle
from device_runners.power.energy import energy_summary, window_energy
from device_runners.results import atomic_write_json
from edge_ee.errors import ResultsError
from edge_ee.report_tables import (  # noqa: F401 - re-exported: the report's public names
    BYTES_NOTE,
    ESTIMATED,
    Table,
    build_tables,
    fmt,
    table_markdown,
    warnings_of,
)

PERCENTILES = (50, 90, 95, 99)


def _pct(values: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return {}
    out = {f"p{p}": float(np.percentile(a, p)) for p in PERCENTILES}
    out.update(mean=float(a.mean()), max=float(a.max()), min=float(a.min()), count=int(a.size))
    return out


# ----------------------------------------------------------------------------- statistics


def energy_of_run(results: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(energy summary, power series for plots) of the run window; (None, None) without power."""
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
    n = len(results["samples"].get("exit", []))
    summary = energy_summary(win, n, update_period_ms=float(power.get("update_period_ms") or
                                                            period_ms or 100.0),
                             idle_power_mw=idle.get("idle_power_mw"), is_estimate=is_estimate)
    source = power.get("source") or {}
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


def summarize(results: dict[str, Any], bundle: Bundle) -> dict[str, Any]:
    """Statistics of one run; refuses results that came from another bundle.

    The key `series` holds raw arrays for the figures; it is left out of report.json.
    Segmentation bundles are summarised by `edge_ee.report_seg`.
    """
    if (bundle.manifest.get("model") or {}).get("task") == "language-model":
        from edge_ee.report_lm import summarize_lm
        return summarize_lm(results, bundle)
    if (bundle.manifest.get("model") or {}).get("task") == "segmentation":
        from edge_ee.report_seg import summarize_seg
        return summarize_seg(results, bundle)
    if results["bundle"]["manifest_sha256"] != bundle.manifest_sha256:
        raise ResultsError(
            f"results were recorded with bundle {results['bundle']['manifest_sha256'][:12]}…, "
            f"not {bundle.manifest_sha256[:12]}… ({bundle.root}); pass the bundle that was run")
    segs = bundle.segments
    s = results["samples"]
    exits = np.asarray(s.get("exit", []), np.int64)
    n = len(exits)
    seg_flops = np.asarray([seg["flops"] for seg in segs], np.float64)
    cum = np.cumsum(seg_flops)
    full = float(bundle.manifest.get("cost", {}).get("full_flops") or cum[-1])
    flops = cum[exits] if n else np.zeros(0)
    labels = [v for v in s.get("label", []) if v is not None]
    acc = None
    if n and len(labels) == n:
        acc = float((np.asarray(s["prediction"]) == np.asarray(labels)).mean())
    hist = np.bincount(exits, minlength=len(segs)) if n else np.zeros(len(segs), int)
    prof = results.get("profile") or {}
    out: dict[str, Any] = {
        "model": results["bundle"]["model"],
        "backend": results["backend"],
        "mode": results["protocol"]["mode"],
        "no_exit": results["protocol"].get("no_exit", False),
        "complete": results["complete"],
        "samples": n,
        "accuracy": acc,
        "exit_points": [seg["exit"].get("point") for seg in segs],
        "exit_histogram": {segs[i]["exit"]["point"]: int(hist[i]) for i in range(len(segs))},
        "expected_flops": float(flops.mean()) if n else None,
        "full_flops": full,
        "cost_fraction": float(flops.mean() / full) if n else None,
        "init_ns": results.get("init_ns"),
        "first_inference_ns": results.get("first_inference_ns"),
        "peak_rss_kib": results.get("peak_rss_kib"),
        "profile": {"name": prof.get("name"), "how": prof.get("how"),
                    "warnings": list(prof.get("warnings") or [])},
        "calibration": _calibration(bundle),
    }
    series: dict[str, Any] = {"latency_ns": [], "segment_latency_ns": [[] for _ in segs]}
    if "segment_latency_ns" in s:
        lat = [sum(v) for v in s["segment_latency_ns"]]
        out["latency_ns"] = _pct(lat)
        per_seg = [[v[i] for v in s["segment_latency_ns"] if len(v) > i] for i in range(len(segs))]
        out["segment_latency_ns"] = [_pct(v) for v in per_seg]
        series.update(latency_ns=lat, segment_latency_ns=per_seg)
    if results.get("batches"):
        tot = sum(sum(b["segment_latency_ns"]) for b in results["batches"])
        out["batch_latency_ns_per_sample"] = tot / max(n, 1)
    mean_lat = out.get("latency_ns", {}).get("mean") or out.get("batch_latency_ns_per_sample")
    out["throughput"] = throughput(bundle, out.get("segment_latency_ns", []),
                                   prof.get("profile"), out["expected_flops"], mean_lat)
    out["energy"], series["power"] = energy_of_run(results)
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


def _calibration(bundle: Bundle) -> dict[str, Any]:
    """The manifest's operating points and threshold-sweep curves, one per split.

    `calibration.curve` is {"calibration": [[cost_fraction, accuracy], ...], "test": [...]}
    (what `pipeline.calibration_record` writes); a bare list is taken as the calibration split.
    """
    cal = bundle.manifest.get("calibration") or {}
    curve = cal.get("curve")
    if isinstance(curve, dict) and not {"cost_fraction", "accuracy"} <= set(curve):
        curves = {str(k): _points(v) for k, v in curve.items()}
    else:
        curves = {"calibration": _points(curve)}
    return {"curves": {k: v for k, v in curves.items() if v}, "split": cal.get("split"),
            "point": cal.get("point"), "test_point": cal.get("test_point"),
            "full_accuracy": cal.get("full_accuracy")}


def to_markdown(summaries: list[dict[str, Any]], names: list[str],
                figures: dict[str, str] | None = None) -> str:
    """The report as Markdown; `figures` maps a figure title to its relative PNG path."""
    tables = build_tables(summaries, names)
    lines = ["# edge-ee run report", ""]
    if any(s.get("energy") and s["energy"]["is_estimate"] for s in summaries):
        lines += ["> **Power is ESTIMATED** (no sensor was read): energy numbers below come from"
                  " the hardware profile's idle/max power and CPU utilisation, not a measurement.",
                  ""]
    lines += warnings_of(summaries, names, prefix="- warning: ")
    if len(summaries) > 1:
        base = summaries[0]
        for s, nm in zip(summaries[1:], names[1:], strict=True):
            b, c = base.get("latency_ns", {}).get("p50"), s.get("latency_ns", {}).get("p50")
            if b and c and base["expected_flops"]:
                lines.append(f"- median latency {nm} / {names[0]}: **{c / b:.3f}x**; FLOPs ratio "
                             f"{s['expected_flops'] / base['expected_flops']:.3f}x")
        lines.append("")
    for t in tables:
        if t.show:
            lines += table_markdown(t)
    for title, path in (figures or {}).items():
        lines += [f"![{title}]({path})", ""]
    lines.append("Tables as CSV and JSON: " + ", ".join(f"`tables/{t.name}.csv`" for t in tables))
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_tables_and_figures(out: Path, tables: list[Any], pngs: dict[str, tuple[str, bytes]]
                             ) -> dict[str, str]:
    """tables/<name>.csv|json and figures/<key>.png under `out`; returns {title: relative path}."""
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for t in tables:
        _write_text(out / "tables" / f"{t.name}.csv", t.to_csv())
        atomic_write_json(out / "tables" / f"{t.name}.json",
                          {"title": t.title, "note": t.note, "rows": t.records()})
    paths: dict[str, str] = {}
    if pngs:
        (out / "figures").mkdir(exist_ok=True)
    for key, (title, data) in pngs.items():
        (out / "figures" / f"{key}.png").write_bytes(data)
        paths[title] = f"figures/{key}.png"
    return paths


def write_report(summaries: list[dict[str, Any]], names: list[str], out_dir: str | Path, *,
                 html: bool = True, figures: bool = True) -> Path:
    """report.md, report.json, tables/*.csv|json, figures/*.png and report.html; returns the .md."""
    if any(s.get("task") == "language-model" for s in summaries):
        from edge_ee.report_lm import write_lm_report
        return write_lm_report(summaries, names, out_dir)
    if any(s.get("task") == "segmentation" for s in summaries):
        from edge_ee.report_seg import write_seg_report
        return write_seg_report(summaries, names, out_dir, html=html, figures=figures)
    out = Path(out_dir)
    tables = build_tables(summaries, names)
    pngs: dict[str, tuple[str, bytes]] = {}
    if figures or html:
        from edge_ee.report_plots import make_figures
        pngs = make_figures(summaries, names)
    fig_paths = write_tables_and_figures(out, tables, pngs if figures else {})
    _write_text(out / "report.md", to_markdown(summaries, names, fig_paths))
    clean = [{k: v for k, v in s.items() if k != "series"} for s in summaries]
    atomic_write_json(out / "report.json", dict(zip(names, clean, strict=True)))
    if html:
        from edge_ee.report_html import to_html
        _write_text(out / "report.html", to_html(summaries, names, tables, pngs))
    return out / "report.md"
