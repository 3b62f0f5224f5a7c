"""Tables of `edge-ee report`: one `Table` per view, rendered as Markdown/HTML, written as CSV/JSON.

`build_tables(summaries, names)` turns the statistics of `summarize` into the overview
(metric x run), latency per segment, exits, energy, throughput against the profile,
operating points, the certified risk bound and the calibration curves, then appends the
tables the runs' task metric adds (`TaskMetric.extra_tables`). `warnings_of` is the one
list of warnings both the Markdown and the HTML page show. Energy from an estimated power
source carries `estimated` in its cells (overview) or in a `power_label` column.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from edge_ee.report.summary import baseline_index, measured_drop

ESTIMATED = "estimated"


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


def estimated(sums: list[dict[str, Any]]) -> bool:
    return any(s.get("energy") and s["energy"]["is_estimate"] for s in sums)


def _pct_vs(v: float | None, base: float | None) -> float | None:
    return None if v is None or not base else 100 * (v / base - 1)


def overview_table(sums: list[dict[str, Any]], names: list[str]) -> Table:
    rows: list[list[Any]] = []
    base = sums[baseline_index(sums)]
    unit = sums[0]["metric"]["unit"]

    def row(label: str, fn: Any) -> None:
        rows.append([label, *(fn(s) for s in sums)])

    def energy(key: str) -> Any:
        def get(s: dict[str, Any]) -> Any:
            e = s.get("energy")
            v = None if e is None else e.get(key)
            return v if v is None or not e["is_estimate"] else f"{fmt(v)} ({ESTIMATED})"
        return get

    row(f"{unit}s", lambda s: s["samples"] if s["complete"] else f"{s['samples']} (incomplete)")
    row("variant", lambda s: s["variant"])
    row("backend", lambda s: f"{s['backend']['version']} x{s['backend']['threads']} thread(s)")
    row("mode", lambda s: s["mode"] + (" (exits ignored)" if s["no_exit"] else ""))
    if any(s.get("strategy") for s in sums):
        row("strategy", lambda s: (s.get("strategy") or {}).get("name", "split") + (
            f" ({s['strategy']['reason']})" if s.get("strategy") else ""))
    row("profile", lambda s: s["profile"]["name"] or "none")
    row(sums[0]["metric"]["label"], lambda s: s["metric"]["value"])
    drops = [measured_drop(sums, i) for i in range(len(sums))]
    if any(d is not None for d in drops):
        rows.append(["drop vs full network (measured)", *drops])
    if any(s["calibration"]["certificate"] for s in sums):
        row("certified drop bound (calibration, upper)",
            lambda s: _certified_bound(s["calibration"]["certificate"]))
    row(f"expected MFLOPs / {unit}", lambda s: s["expected_flops"] and s["expected_flops"] / 1e6)
    row("cost / full network", lambda s: s["cost_fraction"])
    if len(sums) > 1:
        row(f"FLOPs vs {names[sums.index(base)]} (%)",
            lambda s: _pct_vs(s["expected_flops"], base["expected_flops"]))
    for p in ("p50", "p90", "p95", "p99", "max"):
        row(f"latency {p} (ms)", lambda s, p=p: _ms(s.get("latency_ns", {}).get(p)))
    row("latency mean (ms)", lambda s: _ms(s.get("latency_ns", {}).get("mean")
                                           or s.get("batch_latency_ns_per_sample")))
    if len(sums) > 1:
        row(f"latency p50 vs {names[sums.index(base)]} (%)",
            lambda s: _pct_vs(s.get("latency_ns", {}).get("p50"),
                              base.get("latency_ns", {}).get("p50")))
    row("first inference (ms)", lambda s: _ms(s["first_inference_ns"]))
    row("init (ms)", lambda s: _ms(s["init_ns"]))
    row("peak RSS of the runner process (MiB)", lambda s: s["peak_rss_kib"] and (
        s["peak_rss_kib"] / 1024 if not s.get("peak_rss_torch_loaded")
        else f"{fmt(s['peak_rss_kib'] / 1024)} (in-process call: includes torch)"))
    row("power label", lambda s: "no power data" if s.get("energy") is None
        else s["energy"]["label"])
    row("mean power (mW)", energy("mean_power_mw"))
    row("idle power (mW)", energy("idle_power_mw"))
    row(f"energy / {unit} (mJ)", energy("energy_per_inference_mj"))
    row(f"energy above idle / {unit} (mJ)", energy("above_idle_energy_per_inference_mj"))
    if any(s["throughput"] for s in sums):
        row("achieved GFLOP/s (whole run)",
            lambda s: ((s["throughput"] or {}).get("overall") or {}).get("achieved_gflops"))
    est = estimated(sums)
    return Table("overview", "Overview", ["metric", *names], rows, estimated=est,
                 note=(f"ratios against {names[sums.index(base)]}; " if len(sums) > 1 else "")
                 + ("energy values marked (estimated) come from the profile's power model, "
                    "not a sensor" if est else ""))


def calibration_tables(sums: list[dict[str, Any]], names: list[str]) -> list[Table]:
    """Operating points, the certified bound beside the measured drop, and the curves."""
    label = sums[0]["metric"]["label"]
    op_rows, curve_rows, cert_rows, risk_rows = [], [], [], []
    for i, (s, nm) in enumerate(zip(sums, names, strict=True)):
        cal = s["calibration"]
        if s["cost_fraction"] is not None and s["metric"]["value"] is not None:
            op_rows.append([nm, "measured (this run)", s["cost_fraction"], s["metric"]["value"]])
        for key, what in (("point", f"chosen on calibration ({cal['split'] or 'calibration'})"),
                          ("test_point", "chosen, on the test split at export")):
            if isinstance(cal.get(key), dict) and "cost_fraction" in cal[key]:
                op_rows.append([nm, what, cal[key]["cost_fraction"], cal[key].get("accuracy")])
        full_acc = cal.get("full_accuracy")
        if isinstance(full_acc, dict) and full_acc.get("test") is not None:
            op_rows.append([nm, "full network, test split at export", 1.0, full_acc["test"]])
        curve_rows += [[nm, split, p["cost_fraction"], p["accuracy"]]
                       for split, pts in cal["curves"].items() for p in pts]
        c = cal["certificate"]
        if c:
            cert_rows.append([nm, c.get("epsilon"), c.get("delta"), c.get("n"), c.get("bound"),
                              c.get("empirical_risk"), c.get("risk_upper_bound"),
                              measured_drop(sums, i), c.get("certified"), c.get("tested"),
                              c.get("samples_needed")])
        risk_rows += [[nm, p["cost_fraction"], p["empirical_risk"], p["upper_bound"]]
                      for p in cal["risk_curve"]]
    out = [Table("operating_points", f"{label} vs expected cost (fraction of the full network's "
                 "FLOPs)", ["run", "point", "cost_fraction", sums[0]["metric"]["name"]], op_rows)]
    if cert_rows:
        out.append(Table("certificate", "Certified risk bound (calibration) beside the measured "
                         "drop", ["run", "epsilon", "delta", "n", "bound", "empirical_risk",
                                  "risk_upper_bound", "measured_drop", "certified", "tested",
                                  "samples_needed"], cert_rows,
                         note="bound: the risk the calibration certifies with probability "
                              "1 - delta; measured_drop: this run's metric below the full "
                              "network (monolithic run, else the manifest's test accuracy)"))
    if risk_rows:
        out.append(Table("risk_curve", "Risk curve: empirical risk and its upper bound by cost",
                         ["run", "cost_fraction", "empirical_risk", "upper_bound"], risk_rows,
                         show=False))
    if curve_rows:
        out.append(Table("calibration_curve", "Calibration threshold sweep (from the manifest)",
                         ["run", "split", "cost_fraction", "accuracy"], curve_rows, show=False))
    return out


def build_tables(sums: list[dict[str, Any]], names: list[str]) -> list[Table]:
    """Every table of the report (overview first), then the task metric's own."""
    from edge_ee.report.metrics import METRICS
    lat_rows, exit_rows, en_rows, tp_rows = [], [], [], []
    for s, nm in zip(sums, names, strict=True):
        pts = s["exit_points"]
        for i, st in enumerate(s.get("segment_latency_ns", [])):
            lat_rows.append([nm, s["segment_names"][i], pts[i], st.get("count", 0),
                             *(_ms(st.get(k)) for k in ("p50", "p90", "p95", "p99", "mean"))])
        if s.get("assemble_latency_ns"):
            st = s["assemble_latency_ns"]
            lat_rows.append([nm, "assemble", None, st.get("count", 0),
                             *(_ms(st.get(k)) for k in ("p50", "p90", "p95", "p99", "mean"))])
        for (k, v), f in zip(s["exit_histogram"].items(), s["exit_fractions"], strict=False):
            exit_rows.append([nm, k, v, f])
        e = s.get("energy")
        if e is not None:
            en_rows.append([nm, e["source"], e["label"], e["duration_ns"] / 1e9, e["n_inferences"],
                            e["energy_mj"], e["mean_power_mw"], e["idle_power_mw"],
                            e["above_idle_energy_mj"], e["energy_per_inference_mj"],
                            e["above_idle_energy_per_inference_mj"]])
        for r in (s["throughput"] or {}).get("segments", []):
            tp_rows.append([nm, r["segment"], r["flops"], _ms(r["latency_p50_ns"]),
                            r["achieved_gflops"], r["peak_gflops"], r["pct_of_peak"],
                            r["bytes_estimated"], r["achieved_gbps_estimated"],
                            r["bandwidth_gbps"], r["pct_of_bandwidth_estimated"]])
    est = estimated(sums)
    m = sums[0]["metric"]
    tables = [
        overview_table(sums, names),
        Table("latency_segments", f"Latency per segment ({m['unit']}s that reached it)",
              ["run", "segment", "exit_point", "count", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
               "mean_ms"], lat_rows, show=len(lat_rows) <= 40),
        Table("exits", f"Exits taken ({m['exit_unit']} leaving at each exit)",
              ["run", "exit_point", "count", "fraction"], exit_rows, show=len(exit_rows) <= 40),
        Table("energy", "Energy over the run window" + (" (ESTIMATED from the hardware profile,"
                                                        " not measured)" if est else ""),
              ["run", "power_source", "power_label", "window_s", "n_inferences", "energy_mj",
               "mean_power_mw", "idle_power_mw", "above_idle_energy_mj",
               "energy_per_inference_mj", "above_idle_energy_per_inference_mj"], en_rows,
              note="trapezoid rule over the run window; above idle = energy - idle power x "
                   "window" + ("; power_label 'estimated': idle + the runner's CPU share x "
                               "(max - idle) from the profile" if est else ""), estimated=est),
    ]
    if tp_rows:
        from edge_ee.report.stats import BYTES_NOTE
        prec = sorted({s["throughput"]["precision"] for s in sums if s["throughput"]})
        tables.append(Table("throughput", f"Achieved throughput vs the profile ({'/'.join(prec)} "
                            "CPU peak)", ["run", "segment", "flops", "latency_p50_ms",
                                          "achieved_gflops", "peak_gflops", "pct_of_peak",
                                          "bytes_estimated", "achieved_gbps_estimated",
                                          "bandwidth_gbps", "pct_of_bandwidth_estimated"],
                            tp_rows, note=f"bytes are {BYTES_NOTE}", estimated=True,
                            show=len(tp_rows) <= 40))
    tables += calibration_tables(sums, names)
    return tables + METRICS[m["name"]]().extra_tables(sums, names)


def table_markdown(t: Table) -> list[str]:
    lines = [f"## {t.title}", ""]
    if not t.rows:
        return [*lines, "_no data_", ""]
    lines += ["| " + " | ".join(t.columns) + " |", "|---" * len(t.columns) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in t.rows]
    return [*lines, *(["", f"_{t.note}_"] if t.note else []), ""]


def warnings_of(sums: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Every warning of every run, once: profile, power source caveats and energy warnings,
    calibration source, missing labels, interruption. Markdown and HTML show the same list."""
    out = []
    for s, nm in zip(sums, names, strict=True):
        e = s.get("energy") or {}
        caveats = [] if e.get("is_estimate") else e.get("caveats", [])  # estimate: power line
        ws = [*s["profile"]["warnings"], *(f"energy: {c}" for c in caveats),
              *(f"energy: {w}" for w in e.get("warnings", []))]
        src = s["calibration"].get("source") or {}
        if src.get("warning"):
            ws.append(f"calibration data: {src['warning']}")
        cert = s["calibration"].get("certificate") or {}
        if cert and cert.get("certified") is False:
            ws.append("the calibration's risk bound is NOT certified at the requested epsilon "
                      f"(bound {fmt(cert.get('bound'))} > epsilon {fmt(cert.get('epsilon'))})")
        if s["metric"]["value"] is None:
            ws.append(f"no labels were given to edge-ee-run, so no {s['metric']['label']}")
        if not s["complete"]:
            ws.append("the run was interrupted: statistics cover the units done")
        out += [f"{nm}: {w}" for w in dict.fromkeys(ws)]
    return out


def _certified_bound(cert: dict | None) -> str | None:
    """'≤ 0.0094 (binomial, 1 − δ = 0.9, n = 5000)', or why nothing was certified."""
    if not cert:
        return None
    if not cert.get("certified"):
        return f"not certified ({cert.get('bound')}, n = {cert.get('n')})"
    return (f"≤ {cert['risk_upper_bound']:.4f} ({cert['bound']}, 1 − δ = "
            f"{1 - cert['delta']:.3g}, n = {cert['n']})")
