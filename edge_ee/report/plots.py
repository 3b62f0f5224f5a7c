"""Figures of `edge-ee report` (matplotlib, Agg canvas, no pyplot state), as PNG bytes.

Each `fig_*` takes the summaries of `summarize` (with their `series`) and the run names
and returns a Figure, or None when there is nothing to draw (no empty axes). Axes over
segments stay readable at any number of segments: runs get their own group of slots,
tick labels are thinned to at most `MAX_TICKS` per run and the run names label the groups.
`make_figures` renders the shared figures and the ones the task metric adds.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
DPI = 90
MAX_TICKS = 12  # segment labels per run before they are thinned
WHISKERS = (5, 95)  # percentiles of the latency whiskers (p99 is in the end-to-end panel)
Summary = dict[str, Any]


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _estimated(sums: list[Summary]) -> bool:
    return any(s.get("energy") and s["energy"]["is_estimate"] for s in sums)


def _log_axis(ax: Any) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(ax.get_ylabel() + " (log scale)")


def _group_x(n_groups: int, n_runs: int, i_run: int, width: float = 0.8) -> tuple[list[float], float]:
    w = width / max(n_runs, 1)
    return [g - width / 2 + w * (i_run + 0.5) for g in range(n_groups)], w


def thin(n: int, max_ticks: int = MAX_TICKS) -> list[int]:
    """Indices of the labels to keep out of n: every k-th, always the last."""
    if n <= max_ticks:
        return list(range(n))
    step = math.ceil(n / max_ticks)
    keep = list(range(0, n, step))
    if keep[-1] != n - 1:
        if n - 1 - keep[-1] < step / 2:
            keep[-1] = n - 1
        else:
            keep.append(n - 1)
    return keep


def segment_slots(sums: list[Summary]) -> list[list[float]]:
    """x positions of every (run, segment): runs side by side with a gap between groups.
    Segments of different bundles are different graphs, so they never share a slot."""
    pos, x = [], 0.0
    for s in sums:
        xs = [x + g for g in range(len(s["exit_points"]))]
        pos.append(xs)
        x = (xs[-1] if xs else x) + 2.4
    return pos


def segment_axis(ax: Any, sums: list[Summary], names: list[str], slots: list[list[float]]
                 ) -> None:
    """Thinned segment tick labels, and the run name under each group of slots."""
    ticks, labels = [], []
    many = sum(len(s["exit_points"]) for s in sums) > MAX_TICKS
    for s, xs in zip(sums, slots, strict=True):
        for g in thin(len(xs)):
            ticks.append(xs[g])
            p = str(s["exit_points"][g])
            labels.append(str(g) if many else f"seg{g}\n{p if p.startswith('exit') else 'exit ' + p}")
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_xlim(-0.8, max(x for xs in slots for x in xs) + 0.8)
    if len(sums) > 1:
        for nm, xs in zip(names, slots, strict=True):
            ax.annotate(nm, ((xs[0] + xs[-1]) / 2, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, -17 if many else -32), textcoords="offset points",
                        ha="center", va="top", fontsize=8, fontweight="bold")
    if many:
        ax.set_xlabel("segment index", fontsize=8, labelpad=16 if len(sums) > 1 else 2)


def _width(sums: list[Summary], base: float = 8.0) -> float:
    slots = sum(len(s["exit_points"]) for s in sums)
    return float(min(13.0, max(base, 3.0 + 0.2 * slots)))


def fig_latency(sums: list[Summary], names: list[str]) -> Figure | None:
    """Per-segment latency boxes (whiskers p1..p99) and end-to-end percentiles."""
    if not any(v for s in sums for v in s["series"]["segment_latency_ns"]):
        return None
    if sum(len(s["exit_points"]) for s in sums) > MAX_TICKS:  # many slots: boxes get a row
        fig = Figure(figsize=(_width(sums, 10), 8.2), layout="constrained")
        ax, ax2 = fig.subplots(2, 1, height_ratios=(3, 2))
    else:
        fig = Figure(figsize=(13, 4.4), layout="constrained")
        ax, ax2 = fig.subplots(1, 2, width_ratios=(3, 1.3))
    slots = segment_slots(sums)
    for i, s in enumerate(sums):
        data = [np.asarray(seg, np.float64) / 1e6 for seg in s["series"]["segment_latency_ns"]]
        keep = [(p, d) for p, d in zip(slots[i], data, strict=True) if len(d)]
        if keep:
            bp = ax.boxplot([d for _, d in keep], positions=[p for p, _ in keep], widths=0.6,
                            whis=WHISKERS, showfliers=False, patch_artist=True,
                            manage_ticks=False)
            for box in bp["boxes"]:
                box.set(facecolor=color(i), alpha=0.55, edgecolor=color(i))
            for med in bp["medians"]:
                med.set(color="black")
    segment_axis(ax, sums, names, slots)
    # the scale follows the boxes, not the preemption tails: log only when the segments'
    # medians differ by > 15x; limits from the whiskers (the tails are in the p99 panel)
    data = [np.asarray(v, np.float64) / 1e6 for s in sums
            for v in s["series"]["segment_latency_ns"] if len(v)]
    meds = [float(np.median(d)) for d in data]
    lo = min(float(np.percentile(d, WHISKERS[0])) for d in data)
    hi = max(float(np.percentile(d, WHISKERS[1])) for d in data)
    ax.set_ylabel("latency per segment (ms)")
    if min(meds) > 0 and max(meds) / min(meds) > 15:
        _log_axis(ax)
        ax.set_ylim(lo / 1.3, hi * 1.3)
    else:
        pad = 0.08 * (hi - lo) or 0.05 * hi
        ax.set_ylim(max(0.0, lo - pad), hi + pad)
    ax.set_title(f"Latency per segment (box p25-p75, whiskers p{WHISKERS[0]}-p{WHISKERS[1]})",
                 fontsize=10)
    ax.legend(handles=[Patch(color=color(i), alpha=0.55, label=n) for i, n in enumerate(names)],
              fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    pcts = ("p50", "p90", "p95", "p99")
    for i, s in enumerate(sums):
        lat = s.get("latency_ns", {})
        pos, w = _group_x(len(pcts), len(sums), i)
        bars = ax2.bar(pos, [lat.get(p, 0) / 1e6 for p in pcts], w, color=color(i),
                       label=names[i])
        if len(sums) <= 3:
            ax2.bar_label(bars, fmt="%.3g", fontsize=7)
    ax2.set_xticks(range(len(pcts)), pcts)
    ax2.set_ylabel("end-to-end latency (ms)")
    p50 = [s.get("latency_ns", {}).get("p50") or 0 for s in sums]
    p99 = [s.get("latency_ns", {}).get("p99") or 0 for s in sums]
    if min(p50) > 0 and max(p99) / min(p50) > 15:  # a long tail would flatten the p50 bars
        _log_axis(ax2)
    ax2.set_title("End-to-end latency percentiles", fontsize=10)
    ax2.grid(axis="y", alpha=0.3)
    ax2.margins(y=0.12)
    ax2.legend(fontsize=8)
    return fig


def fig_exits(sums: list[Summary], names: list[str]) -> Figure | None:
    if not any(sum(s["exit_histogram"].values()) for s in sums):
        return None
    unit = sums[0]["metric"]["exit_unit"]
    fig = Figure(figsize=(_width(sums), 3.8), layout="constrained")
    ax = fig.subplots()
    slots = segment_slots(sums)
    for i, s in enumerate(sums):
        vals = [100 * f for f in s["exit_fractions"]]
        bars = ax.bar(slots[i], vals, 0.75, color=color(i), label=names[i])
        if len(slots[i]) <= MAX_TICKS:
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
    segment_axis(ax, sums, names, slots)
    ax.set_ylabel(f"{unit} leaving here (%)")
    ax.set_title(f"Exits taken (share of {unit} leaving at each segment's exit; the last is "
                 "the final one)", fontsize=10)
    ax.margins(y=0.12)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


ENERGY_KINDS = (("energy_per_inference_mj", "total"),
                ("above_idle_energy_per_inference_mj", "above idle"))


def fig_energy(sums: list[Summary], names: list[str]) -> Figure | None:
    """Energy per unit; drawn only when some run has a per-unit value (a window long enough)."""
    runs = [(i, s["energy"]) for i, s in enumerate(sums) if s.get("energy")]
    kinds = [(k, lab) for k, lab in ENERGY_KINDS
             if any(e.get(k) is not None for _, e in runs)]
    if not kinds:
        return None
    est = _estimated(sums)
    unit = sums[0]["metric"]["unit"]
    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.subplots()
    for j, (i, e) in enumerate(runs):
        pos, w = _group_x(len(kinds), len(runs), j)
        vals = [e.get(k) for k, _ in kinds]
        bars = ax.bar(pos, [v or 0.0 for v in vals], w, color=color(i),
                      label=names[i] + (" (estimated)" if e["is_estimate"] else " (measured)"),
                      hatch="//" if e["is_estimate"] else None, edgecolor="white")
        ax.bar_label(bars, [("n/a" if v is None else f"{v:.3g}") for v in vals], fontsize=7)
    ax.set_xticks(range(len(kinds)), [f"{label} per {unit}" for _, label in kinds])
    ax.set_ylabel(f"energy per {unit} (mJ)" + (", ESTIMATED" if est else ""))
    ax.set_title(f"Energy per {unit}" + (" - ESTIMATED from the hardware profile, not measured"
                                         if est else " (measured)"), fontsize=10,
                 color="#b00020" if est else "black")
    ax.margins(y=0.25)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def fig_metric_cost(sums: list[Summary], names: list[str]) -> Figure | None:
    label = sums[0]["metric"]["label"]
    if not any(s["metric"]["value"] is not None or s["calibration"]["curves"] for s in sums):
        return None
    fig = Figure(figsize=(9.5, 4.2), layout="constrained")
    ax = fig.subplots()
    curves_done: set[str] = set()
    for i, s in enumerate(sums):
        cal = s["calibration"]
        if cal["curves"] and s["model"] not in curves_done:
            curves_done.add(s["model"])
            for split, pts in cal["curves"].items():
                ax.plot([p["cost_fraction"] for p in pts], [p["accuracy"] for p in pts],
                        "-" if split == "calibration" else "--", color=color(i), alpha=0.6,
                        label=f"{names[i]}: threshold sweep ({split} split)")
        for key, mk, what in (("point", "s", "chosen (calibration)"),
                              ("test_point", "^", "chosen (test, export)")):
            p = cal.get(key)
            if isinstance(p, dict) and p.get("accuracy") is not None:
                ax.plot(p["cost_fraction"], p["accuracy"], mk, mfc="none", color=color(i), ms=9,
                        label=f"{names[i]}: {what}")
        full_acc = cal.get("full_accuracy")
        if isinstance(full_acc, dict) and full_acc.get("test") is not None:
            ax.plot(1.0, full_acc["test"], "x", color=color(i), ms=9,
                    label=f"{names[i]}: full network (test, export)")
        if s["metric"]["value"] is not None and s["cost_fraction"] is not None:
            ax.plot(s["cost_fraction"], s["metric"]["value"], "o", color=color(i), ms=9,
                    label=f"{names[i]}: measured run")
    ax.set_xlabel("expected cost (fraction of the full network's FLOPs)")
    ax.set_ylabel(label)
    ax.set_title(f"{label} vs expected cost", fontsize=10)
    ax.margins(y=0.1)
    lo, hi = ax.get_xlim()
    ax.set_xlim(min(lo, 0.0), max(hi, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def fig_metric_latency(sums: list[Summary], names: list[str]) -> Figure | None:
    pts = [(i, s) for i, s in enumerate(sums)
           if s["metric"]["value"] is not None and s.get("latency_ns", {}).get("p50")]
    if len(pts) < 2:
        return None
    fig = Figure(figsize=(6.8, 4.0), layout="constrained")
    ax = fig.subplots()
    for i, s in pts:
        x, y = s["latency_ns"]["p50"] / 1e6, s["metric"]["value"]
        ax.scatter([x], [y], marker="s" if s["variant"] == "monolithic" else "o", s=70,
                   color=color(i), label=f"{names[i]} ({s['variant']})", zorder=3)
        ax.annotate(names[i], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(f"median latency per {sums[0]['metric']['unit']} (ms, measured)")
    ax.set_ylabel(sums[0]["metric"]["label"])
    ax.margins(x=0.15, y=0.15)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def fig_throughput(sums: list[Summary], names: list[str]) -> Figure | None:
    if not any(r["achieved_gflops"] for s in sums for r in (s["throughput"] or {})
               .get("segments", [])):
        return None
    if sum(len(s["exit_points"]) for s in sums) > MAX_TICKS:  # many slots: one row each
        fig = Figure(figsize=(_width(sums, 10), 7.2), layout="constrained")
        ax, ax2 = fig.subplots(2, 1)
    else:
        fig = Figure(figsize=(12, 3.9), layout="constrained")
        ax, ax2 = fig.subplots(1, 2)
    slots = segment_slots(sums)
    for i, s in enumerate(sums):
        tp = s["throughput"] or {"segments": [], "peak_gflops": None, "bandwidth_gbps": None}
        rows = tp["segments"]
        ax.bar(slots[i][:len(rows)], [(r["pct_of_peak"] if tp["peak_gflops"] else
                                       r["achieved_gflops"]) or 0 for r in rows],
               0.75, color=color(i), label=names[i])
        ax2.bar(slots[i][:len(rows)], [(r["pct_of_bandwidth_estimated"] if tp["bandwidth_gbps"]
                                        else r["achieved_gbps_estimated"]) or 0 for r in rows],
                0.75, color=color(i), label=names[i], hatch="//", edgecolor="white")
    s0 = next(s["throughput"] for s in sums if s["throughput"])
    ax.set_ylabel(f"% of peak {s0['precision']} GFLOP/s" if s0["peak_gflops"]
                  else "achieved GFLOP/s")
    ax.set_title(f"Compute: FLOPs / p50 latency vs peak {s0['peak_gflops'] or '?'} GFLOP/s "
                 f"({s0['precision']}, CPU)", fontsize=9)
    ax2.set_ylabel("% of memory bandwidth (estimated)" if s0["bandwidth_gbps"]
                   else "GB/s (estimated)")
    ax2.set_title(f"Memory: ESTIMATED bytes / p50 latency vs {s0['bandwidth_gbps'] or '?'} GB/s",
                  fontsize=9)
    for a in (ax, ax2):
        segment_axis(a, sums, names, slots)
        a.grid(axis="y", alpha=0.3)
        a.legend(fontsize=8)
    return fig


def fig_power(sums: list[Summary], names: list[str]) -> Figure | None:
    runs = [(i, s["series"]["power"]) for i, s in enumerate(sums) if s["series"].get("power")]
    if not runs:
        return None
    fig = Figure(figsize=(10, 2.3 + 1.9 * len(runs)), layout="constrained")
    axes = fig.subplots(len(runs), 1, squeeze=False)[:, 0]
    for ax, (i, p) in zip(axes, runs, strict=True):
        ax.plot(p["t_s"], p["power_mw"], "-", color=color(i), lw=1.2,
                marker="." if len(p["t_s"]) < 200 else None, ms=3)
        if p["idle_s"]:
            ax.axvspan(*p["idle_s"], color="#9e9e9e", alpha=0.25, label="idle window")
        ax.axvspan(*p["run_s"], color=color(i), alpha=0.12, label="run window")
        if p["idle_power_mw"] is not None:
            ax.axhline(p["idle_power_mw"], color="black", ls="--", lw=0.8,
                       label=f"idle baseline {p['idle_power_mw']:.0f} mW")
        tag = "ESTIMATED power" if p["is_estimate"] else "measured power"
        ax.set_title(f"{names[i]}: {tag} over time", fontsize=10,
                     color="#b00020" if p["is_estimate"] else "black")
        ax.set_ylabel("power (mW)" + (", est." if p["is_estimate"] else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[-1].set_xlabel("time since the first power sample (s)")
    return fig


def fig_risk(sums: list[Summary], names: list[str]) -> Figure | None:
    """The calibration's risk curve with its upper-bound band, epsilon, and measured drops."""
    runs = [(i, s) for i, s in enumerate(sums) if s["calibration"]["risk_curve"]]
    if not runs:
        return None
    from edge_ee.report.summary import measured_drop
    fig = Figure(figsize=(8.5, 4.0), layout="constrained")
    ax = fig.subplots()
    for i, s in runs:
        pts = s["calibration"]["risk_curve"]
        x = [p["cost_fraction"] for p in pts]
        ax.plot(x, [p["empirical_risk"] for p in pts], "-", color=color(i),
                label=f"{names[i]}: empirical risk (calibration)")
        ax.fill_between(x, [p["empirical_risk"] for p in pts], [p["upper_bound"] for p in pts],
                        color=color(i), alpha=0.2, label=f"{names[i]}: up to the upper bound")
        cert = s["calibration"]["certificate"] or {}
        if cert.get("epsilon") is not None:
            ax.axhline(cert["epsilon"], color=color(i), ls="--", lw=0.9,
                       label=f"{names[i]}: epsilon {cert['epsilon']:g}")
        drop = measured_drop(sums, i)
        if drop is not None and s["cost_fraction"] is not None:
            ax.plot(s["cost_fraction"], drop, "o", color=color(i), ms=8,
                    label=f"{names[i]}: measured drop (this run)")
    ax.set_xlabel("expected cost (fraction of the full network's FLOPs)")
    ax.set_ylabel("risk (metric drop vs the full network)")
    ax.set_title("Risk curve with its upper-bound band", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


FIGURES: tuple[tuple[str, str, Callable[[list[Summary], list[str]], Figure | None]], ...] = (
    ("latency", "Latency per segment and end to end", fig_latency),
    ("exits", "Exit histogram", fig_exits),
    ("energy", "Energy per inference", fig_energy),
    ("metric_cost", "{label} vs expected cost", fig_metric_cost),
    ("metric_latency", "{label} vs measured latency", fig_metric_latency),
    ("risk", "Certified risk curve", fig_risk),
    ("throughput", "Achieved throughput vs the profile", fig_throughput),
    ("power", "Power over time", fig_power),
)


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def make_figures(sums: list[Summary], names: list[str]) -> dict[str, tuple[str, bytes]]:
    """{key: (title, PNG bytes)} of every figure that has data, the metric's own included."""
    from edge_ee.report.metrics import METRICS
    out: dict[str, tuple[str, bytes]] = {}
    est = _estimated(sums)
    label = sums[0]["metric"]["label"]
    for key, title, fn in FIGURES:
        fig = fn(sums, names)
        if fig is not None:
            title = title.format(label=label)
            if est and key in ("energy", "power"):
                title += " (ESTIMATED)"
            out[key] = (title, to_png(fig))
    for key, title, fig in METRICS[sums[0]["metric"]["name"]]().extra_figures(sums, names):
        out[key] = (title, to_png(fig))
    return out
