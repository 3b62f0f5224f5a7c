"""Tables of `edge-ee report`: one `Table` per view, rendered as Markdown/HTML, written as CSV/JSON.

`build_tables(summaries, names)` turns the statistics of `edge_ee.report.summarize` into
the overview (metric x run), latency per segment, exits, energy, throughput against the
profile, operating points and the calibration curve. Energy from an estimated power source
carries `estimated` in its cells (overview) or in a `power_label` column (energy table).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

ESTIMATED = "estimated"
BYTES_NOTE = ("estimated: params x 4 bytes + the segment's input and output activations per "
              "sample; activations inside a segment are not counted (a lower bound)")


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
    for p in ("p50", "p90", "p95", "p99", "max"):
        row(f"latency {p} (ms)", lat("latency_ns", p))
    row("latency mean (ms)", lambda s: _ms(s.get("latency_ns", {}).get("mean")
                                           or s.get("batch_latency_ns_per_sample")))
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
        full_acc = cal.get("full_accuracy")
        if isinstance(full_acc, dict) and full_acc.get("test") is not None:
            op_rows.append([nm, "full network, test split at export", 1.0, full_acc["test"]])
        curve_rows += [[nm, split, p["cost_fraction"], p["accuracy"]]
                       for split, pts in cal["curves"].items() for p in pts]
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
              ["run", "split", "cost_fraction", "accuracy"], curve_rows, show=False),
    ]


def table_markdown(t: Table) -> list[str]:
    lines = [f"## {t.title}", ""]
    if not t.rows:
        return [*lines, "_no data_", ""]
    lines += ["| " + " | ".join(t.columns) + " |", "|---" * len(t.columns) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in t.rows]
    return [*lines, *(["", f"_{t.note}_"] if t.note else []), ""]


def warnings_of(summaries: list[dict[str, Any]], names: list[str], prefix: str = "") -> list[str]:
    out = []
    for s, nm in zip(summaries, names, strict=True):
        ws = list(s["profile"]["warnings"]) + list((s.get("energy") or {}).get("warnings") or [])
        if not s["complete"]:
            ws.append("the run was interrupted: statistics cover the samples done")
        out += [f"{prefix}{nm}: {w}" for w in dict.fromkeys(ws)]
    return [*out, ""] if out else []
