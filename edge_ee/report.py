"""`edge-ee report`: statistics from raw results.json + the bundle's manifest + the profile.

Computes on the host what the device only recorded: accuracy, exit histogram, latency
percentiles (end-to-end and per segment), expected FLOPs per sample from the exits taken,
energy over the run window (trapezoid rule via `device_runners.power.energy`, idle
baseline subtracted, labelled `estimated` whenever the power source is an estimate),
achieved throughput against the profile's peak GFLOPS and memory bandwidth, and the
accuracy-versus-cost operating points (the manifest's calibration curve when it has one).
Every table is written as Markdown, CSV and JSON; figures (`report_plots`) and one
self-contained HTML page (`report_html`) are written beside them.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device_runners.manifest import Bundle
from device_runners.power.energy import energy_summary, window_energy
from device_runners.results import atomic_write_json
from edge_ee.errors import ResultsError

PERCENTILES = (50, 90, 95, 99)
ESTIMATED = "estimated"
BYTES_NOTE = ("estimated: params x 4 bytes + the segment's input and output activations per "
              "sample; activations inside a segment are not counted (a lower bound)")


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
    """
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


def _calibration(bundle: Bundle) -> dict[str, Any]:
    cal = bundle.manifest.get("calibration") or {}
    curve = cal.get("curve")
    if isinstance(curve, dict):  # columns form: {"cost_fraction": [...], "accuracy": [...]}
        curve = [{"cost_fraction": c, "accuracy": a}
                 for c, a in zip(curve.get("cost_fraction", []), curve.get("accuracy", []),
                                 strict=False)]
    pts = [p for p in curve or [] if isinstance(p, dict) and "cost_fraction" in p
           and "accuracy" in p]
    return {"curve": sorted(pts, key=lambda p: p["cost_fraction"]), "split": cal.get("split"),
            "point": cal.get("point"), "test_point": cal.get("test_point")}


# ----------------------------------------------------------------------------- tables


@dataclass
class Table:
    """One table: rendered in Markdown/HTML, written as CSV and JSON (raw values)."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""
    estimated: bool = False
    show: bool = True  # False: only written as CSV/JSON (long tables)
    extra: dict[str, Any] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        w.writerows([["" if v is None else v for v in r] for r in self.rows])
        return buf.getvalue()


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) < 1e-9:  # float residue of a difference (e.g. energy above a flat idle)
            return "0"
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def _ms(v: float | None) -> float | None:
    return None if v is None else v / 1e6


def _energy_label(s: dict[str, Any]) -> str:
    e = s.get("energy")
    return "no power data" if e is None else e["label"]


def overview_table(sums: list[dict[str, Any]], names: list[str]) -> Table:
    rows: list[list[Any]] = []

    def row(label: str, fn: Any) -> None:
        rows.append([label, *(fn(s) for s in sums)])

    def lat(key: str, p: str) -> Any:
        return lambda s: _ms(s.get(key, {}).get(p))

    def energy(key: str) -> Any:
        def get(s: dict[str, Any]) -> Any:
            e = s.get("energy")
            v = None if e is None else e.get(key)
            return v if v is None or not e["is_estimate"] else f"{fmt(v)} ({ESTIMATED})"
        return get

    row("samples", lambda s: s["samples"] if s["complete"] else f"{s['samples']} (incomplete)")
    row("backend", lambda s: f"{s['backend']['version']} x{s['backend']['threads']} thread(s)")
    row("mode", lambda s: s["mode"] + (" (exits ignored)" if s["no_exit"] else ""))
    row("profile", lambda s: s["profile"]["name"] or "none")
    row("accuracy", lambda s: s["accuracy"])
    row("expected MFLOPs / sample", lambda s: s["expected_flops"] and s["expected_flops"] / 1e6)
    row("cost / full network", lambda s: s["cost_fraction"])
    for p in ("p50", "p90", "p95", "p99", "max", "mean"):
        row(f"latency {p} (ms)", lat("latency_ns", p))
    row("first inference (ms)", lambda s: _ms(s["first_inference_ns"]))
    row("init (ms)", lambda s: _ms(s["init_ns"]))
    row("peak RSS (MiB)", lambda s: s["peak_rss_kib"] and s["peak_rss_kib"] / 1024)
    row("power source", _energy_label)
    row("mean power (mW)", energy("mean_power_mw"))
    row("idle power (mW)", energy("idle_power_mw"))
    row("energy / inference (mJ)", energy("energy_per_inference_mj"))
    row("energy above idle / inference (mJ)", energy("above_idle_energy_per_inference_mj"))
    row("achieved GFLOP/s (whole run)",
        lambda s: (s["throughput"]["overall"] or {}).get("achieved_gflops"))
    est = any(s.get("energy") and s["energy"]["is_estimate"] for s in sums)
    return Table("overview", "Overview", ["metric", *names], rows, estimated=est,
                 note="energy values marked (estimated) come from the profile's power model, "
                      "not a sensor" if est else "")


def build_tables(sums: list[dict[str, Any]], names: list[str]) -> list[Table]:
    """Every table of the report (overview first)."""
    lat_rows, exit_rows, en_rows, tp_rows, op_rows, curve_rows = [], [], [], [], [], []
    for s, nm in zip(sums, names, strict=True):
        for i, st in enumerate(s.get("segment_latency_ns", [])):
            lat_rows.append([nm, i, s["exit_points"][i], st.get("count", 0),
                             *(_ms(st.get(k)) for k in ("p50", "p90", "p95", "p99", "mean"))])
        total = max(s["samples"], 1)
        for k, v in s["exit_histogram"].items():
            exit_rows.append([nm, k, v, v / total])
        e = s.get("energy")
        if e is not None:
            en_rows.append([nm, e["source"], e["label"], e["duration_ns"] / 1e9, e["n_inferences"],
                            e["energy_mj"], e["mean_power_mw"], e["idle_power_mw"],
                            e["above_idle_energy_mj"], e["energy_per_inference_mj"],
                            e["above_idle_energy_per_inference_mj"]])
        for r in s["throughput"]["segments"]:
            tp_rows.append([nm, r["segment"], r["flops"], _ms(r["latency_p50_ns"]),
                            r["achieved_gflops"], r["peak_gflops"], r["pct_of_peak"],
                            r["bytes_estimated"], r["achieved_gbps_estimated"],
                            r["bandwidth_gbps"], r["pct_of_bandwidth_estimated"]])
        if s["cost_fraction"] is not None:
            op_rows.append([nm, "measured (this run)", s["cost_fraction"], s["accuracy"]])
        cal = s["calibration"]
        for key, what in (("point", f"chosen on calibration ({cal['split'] or 'calibration'})"),
                          ("test_point", "chosen, on the test split at export")):
            if cal.get(key):
                op_rows.append([nm, what, cal[key]["cost_fraction"], cal[key]["accuracy"]])
        curve_rows += [[nm, p["cost_fraction"], p["accuracy"]] for p in cal["curve"]]
    est = any(s.get("energy") and s["energy"]["is_estimate"] for s in sums)
    prec = sorted({s["throughput"]["precision"] for s in sums})
    return [
        overview_table(sums, names),
        Table("latency_segments", "Latency per segment (samples that reached it)",
              ["run", "segment", "exit_point", "count", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
               "mean_ms"], lat_rows),
        Table("exits", "Exits taken", ["run", "exit_point", "count", "fraction"], exit_rows),
        Table("energy", "Energy over the run window" + (" (ESTIMATED from the hardware profile,"
                                                        " not measured)" if est else ""),
              ["run", "power_source", "power_label", "window_s", "n_inferences", "energy_mj",
               "mean_power_mw", "idle_power_mw", "above_idle_energy_mj",
               "energy_per_inference_mj", "above_idle_energy_per_inference_mj"], en_rows,
              note="trapezoid rule over the run window; above idle = energy - idle power x "
                   "window" + ("; power_label 'estimated': idle + CPU utilisation x (max - idle)"
                               " from the profile" if est else ""), estimated=est),
        Table("throughput", f"Achieved throughput vs the profile ({'/'.join(prec)} CPU peak)",
              ["run", "segment", "flops", "latency_p50_ms", "achieved_gflops", "peak_gflops",
               "pct_of_peak", "bytes_estimated", "achieved_gbps_estimated", "bandwidth_gbps",
               "pct_of_bandwidth_estimated"], tp_rows, note=f"bytes are {BYTES_NOTE}",
              estimated=True),
        Table("operating_points", "Accuracy vs expected cost (fraction of the full network's "
              "FLOPs)", ["run", "point", "cost_fraction", "accuracy"], op_rows),
        Table("calibration_curve", "Calibration threshold sweep (from the manifest)",
              ["run", "cost_fraction", "accuracy"], curve_rows, show=False),
    ]


def table_markdown(t: Table) -> list[str]:
    lines = [f"## {t.title}", ""]
    if not t.rows:
        return [*lines, "_no data_", ""]
    lines += ["| " + " | ".join(t.columns) + " |", "|---" * len(t.columns) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in t.rows]
    return [*lines, *(["", f"_{t.note}_"] if t.note else []), ""]


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


def warnings_of(summaries: list[dict[str, Any]], names: list[str], prefix: str = "") -> list[str]:
    out = []
    for s, nm in zip(summaries, names, strict=True):
        ws = list(s["profile"]["warnings"]) + list((s.get("energy") or {}).get("warnings") or [])
        if not s["complete"]:
            ws.append("the run was interrupted: statistics cover the samples done")
        out += [f"{prefix}{nm}: {w}" for w in dict.fromkeys(ws)]
    return [*out, ""] if out else []


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_report(summaries: list[dict[str, Any]], names: list[str], out_dir: str | Path, *,
                 html: bool = True, figures: bool = True) -> Path:
    """report.md, report.json, tables/*.csv|json, figures/*.png and report.html; returns the .md."""
    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    tables = build_tables(summaries, names)
    for t in tables:
        _write_text(out / "tables" / f"{t.name}.csv", t.to_csv())
        atomic_write_json(out / "tables" / f"{t.name}.json",
                          {"title": t.title, "note": t.note, "rows": t.records()})
    pngs: dict[str, tuple[str, bytes]] = {}
    if figures or html:
        from edge_ee.report_plots import make_figures
        pngs = make_figures(summaries, names)
    fig_paths: dict[str, str] = {}
    if figures:
        (out / "figures").mkdir(exist_ok=True)
        for key, (title, data) in pngs.items():
            (out / "figures" / f"{key}.png").write_bytes(data)
            fig_paths[title] = f"figures/{key}.png"
    _write_text(out / "report.md", to_markdown(summaries, names, fig_paths))
    clean = [{k: v for k, v in s.items() if k != "series"} for s in summaries]
    atomic_write_json(out / "report.json", dict(zip(names, clean, strict=True)))
    if html:
        from edge_ee.report_html import to_html
        _write_text(out / "report.html", to_html(summaries, names, tables, pngs))
    return out / "report.md"
