"""Figures of `edge-ee report` (matplotlib, Agg canvas, no pyplot state), as PNG bytes.

Each `fig_*` takes the summaries of `edge_ee.report.summarize` (with their `series`)
and the run names, and returns a `matplotlib.figure.Figure` or None when there is
nothing to draw. `make_figures` renders them all to PNG: latency per segment,
exits taken, energy per inference (titled ESTIMATED when the power source is an
estimate), accuracy against expected cost, throughput against the profile's peaks, and
power over time with the idle and run windows marked.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter, ScalarFormatter

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
DPI = 90
Summary = dict[str, Any]


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _estimated(sums: list[Summary]) -> bool:
    return any(s.get("energy") and s["energy"]["is_estimate"] for s in sums)


def _log_axis(ax: Any) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(ax.get_ylabel() + " (log scale)")


def _group_x(n_groups: int, n_runs: int, i_run: int, width: float = 0.8) -> tuple[list[float], float]:
    w = width / max(n_runs, 1)
    return [g - width / 2 + w * (i_run + 0.5) for g in range(n_groups)], w


def _segment_slots(sums: list[Summary], names: list[str]
                   ) -> tuple[list[list[float]], list[float], list[str]]:
    """x positions of every (run, segment), runs side by side with a gap, and tick labels.

    Segments of different bundles are different graphs, so they never share a slot.
    """
    pos, ticks, labels, x = [], [], [], 0.0
    for s, nm in zip(sums, names, strict=True):
        xs = [x + g for g in range(len(s["exit_points"]))]
        pos.append(xs)
        ticks += xs
        labels += [(f"{nm}\n" if len(sums) > 1 else "") + f"seg{g}\nexit {p}"
                   for g, p in enumerate(s["exit_points"])]
        x = xs[-1] + 1.6 if xs else x + 1.6
    return pos, ticks, labels


def fig_latency(sums: list[Summary], names: list[str]) -> Figure | None:
    """Per-segment latency boxes (whiskers p1..p99) and end-to-end percentiles."""
    if not any(s["series"]["latency_ns"] for s in sums):
        return None
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=(3, 2))
    slots, ticks, labels = _segment_slots(sums, names)
    for i, s in enumerate(sums):
        data = [[v / 1e6 for v in seg] for seg in s["series"]["segment_latency_ns"]]
        keep = [(p, d) for p, d in zip(slots[i], data, strict=True) if d]
        if keep:
            bp = ax.boxplot([d for _, d in keep], positions=[p for p, _ in keep], widths=0.6,
                            whis=(1, 99), showfliers=False, patch_artist=True)
            for box in bp["boxes"]:
                box.set(facecolor=_color(i), alpha=0.55)
            for med in bp["medians"]:
                med.set(color="black")
    ax.set_xticks(ticks, labels, fontsize=7)
    values = [v for s in sums for seg in s["series"]["segment_latency_ns"] for v in seg]
    lo, hi = np.percentile(values, [1, 99]) if values else (0, 0)
    if lo > 0 and hi / lo > 15:  # a long tail (preemption) would flatten the boxes
        ax.set_ylabel("latency per segment (ms)")
        _log_axis(ax)
    else:
        ax.set_ylabel("latency per segment (ms)")
    ax.set_title("Latency per segment (box p25-p75, whiskers p1-p99)", fontsize=10)
    ax.legend(handles=[Patch(color=_color(i), alpha=0.55, label=n) for i, n in enumerate(names)],
              fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    pcts = ("p50", "p90", "p95", "p99")
    for i, s in enumerate(sums):
        lat = s.get("latency_ns", {})
        pos, w = _group_x(len(pcts), len(sums), i)
        bars = ax2.bar(pos, [lat.get(p, 0) / 1e6 for p in pcts], w, color=_color(i),
                       label=names[i])
        ax2.bar_label(bars, fmt="%.3g", fontsize=7)
    ax2.set_xticks(range(len(pcts)), pcts)
    p99 = [s.get("latency_ns", {}).get("p99", 0) for s in sums]
    p50 = [s.get("latency_ns", {}).get("p50", 0) for s in sums]
    if min(p50) > 0 and max(p99) / min(p50) > 15:
        ax2.set_ylabel("end-to-end latency (ms)")
        _log_axis(ax2)
    else:
        ax2.set_ylabel("end-to-end latency (ms)")
    ax2.set_title("End-to-end latency percentiles", fontsize=10)
    ax2.grid(axis="y", alpha=0.3)
    ax2.legend(fontsize=8)
    return fig


def fig_exits(sums: list[Summary], names: list[str]) -> Figure | None:
    by_len = sorted(sums, key=lambda s: -len(s["exit_points"]))
    points = list(dict.fromkeys(p for s in by_len for p in s["exit_points"]))
    if not points or not any(s["samples"] for s in sums):
        return None
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, s in enumerate(sums):
        total = max(s["samples"], 1)
        pos, w = _group_x(len(points), len(sums), i)
        vals = [100 * s["exit_histogram"].get(p, 0) / total for p in points]
        bars = ax.bar(pos, vals, w, color=_color(i), label=names[i])
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(points)), [f"exit {p}" for p in points])
    ax.set_ylabel("samples leaving here (%)")
    ax.set_title("Exits taken", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def fig_energy(sums: list[Summary], names: list[str]) -> Figure | None:
    runs = [(i, s["energy"]) for i, s in enumerate(sums) if s.get("energy")]
    if not runs:
        return None
    est = _estimated(sums)
    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.subplots()
    kinds = (("energy_per_inference_mj", "total"), ("above_idle_energy_per_inference_mj",
                                                     "above idle"))
    for j, (i, e) in enumerate(runs):
        pos, w = _group_x(len(kinds), len(runs), j)
        vals = [e.get(k) for k, _ in kinds]
        bars = ax.bar(pos, [v or 0.0 for v in vals], w, color=_color(i),
                      label=names[i] + (" (estimated)" if e["is_estimate"] else " (measured)"),
                      hatch="//" if e["is_estimate"] else None, edgecolor="white")
        ax.bar_label(bars, [("n/a" if v is None else f"{v:.3g}") +
                            ("\nestimated" if e["is_estimate"] else "") for v in vals], fontsize=7)
    ax.set_xticks(range(len(kinds)), [f"{label} per inference" for _, label in kinds])
    ax.set_ylabel("energy per inference (mJ)" + (", ESTIMATED" if est else ""))
    ax.set_title("Energy per inference" + (" - ESTIMATED from the hardware profile, not measured"
                                           if est else " (measured)"), fontsize=10,
                 color="#b00020" if est else "black")
    ax.margins(y=0.25)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def fig_accuracy_cost(sums: list[Summary], names: list[str]) -> Figure | None:
    if not any(s["accuracy"] is not None or s["calibration"]["curves"] for s in sums):
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
                        "-" if split == "calibration" else "--", color=_color(i), alpha=0.6,
                        label=f"{names[i]}: threshold sweep ({split} split)")
        if cal.get("point"):
            ax.plot(cal["point"]["cost_fraction"], cal["point"]["accuracy"], "s", mfc="none",
                    color=_color(i), ms=9, label=f"{names[i]}: chosen (calibration)")
        if cal.get("test_point"):
            ax.plot(cal["test_point"]["cost_fraction"], cal["test_point"]["accuracy"], "^",
                    mfc="none", color=_color(i), ms=9, label=f"{names[i]}: chosen (test, export)")
        full_acc = cal.get("full_accuracy")
        if isinstance(full_acc, dict) and full_acc.get("test") is not None:
            ax.plot(1.0, full_acc["test"], "x", color=_color(i), ms=9,
                    label=f"{names[i]}: full network (test, export)")
        if s["accuracy"] is not None and s["cost_fraction"] is not None:
            ax.plot(s["cost_fraction"], s["accuracy"], "o", color=_color(i), ms=9,
                    label=f"{names[i]}: measured run")
    ax.set_xlabel("expected cost (fraction of the full network's FLOPs)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy vs expected cost", fontsize=10)
    ax.margins(y=0.1)
    lo, hi = ax.get_xlim()
    ax.set_xlim(min(lo, 0.0), max(hi, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def fig_throughput(sums: list[Summary], names: list[str]) -> Figure | None:
    if not any(r["achieved_gflops"] for s in sums for r in s["throughput"]["segments"]):
        return None
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    slots, ticks, labels = _segment_slots(sums, names)
    w = 0.7
    for i, s in enumerate(sums):
        tp = s["throughput"]
        rows = tp["segments"]
        pos = slots[i]
        has_peak = tp["peak_gflops"] is not None
        ax.bar(pos, [(r["pct_of_peak"] if has_peak else r["achieved_gflops"]) or 0 for r in rows],
               w, color=_color(i), label=names[i])
        ax2.bar(pos, [(r["pct_of_bandwidth_estimated"] if tp["bandwidth_gbps"]
                       else r["achieved_gbps_estimated"]) or 0 for r in rows], w,
                color=_color(i), label=names[i], hatch="//", edgecolor="white")
    s0 = sums[0]["throughput"]
    ax.set_ylabel(f"% of peak {s0['precision']} GFLOP/s" if s0["peak_gflops"]
                  else "achieved GFLOP/s")
    ax.set_title(f"Compute: FLOPs / p50 latency vs peak {s0['peak_gflops'] or '?'} GFLOP/s "
                 f"({s0['precision']}, CPU)", fontsize=9)
    ax2.set_ylabel("% of memory bandwidth (estimated)" if s0["bandwidth_gbps"]
                   else "GB/s (estimated)")
    ax2.set_title(f"Memory: ESTIMATED bytes / p50 latency vs {s0['bandwidth_gbps'] or '?'} GB/s",
                  fontsize=9)
    for a in (ax, ax2):
        a.set_xticks(ticks, labels, fontsize=7)
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
        ax.plot(p["t_s"], p["power_mw"], "-", color=_color(i), lw=1.2,
                marker="." if len(p["t_s"]) < 200 else None, ms=3)
        if p["idle_s"]:
            ax.axvspan(*p["idle_s"], color="#9e9e9e", alpha=0.25, label="idle window")
        ax.axvspan(*p["run_s"], color=_color(i), alpha=0.12, label="run window")
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


FIGURES: tuple[tuple[str, str, Callable[[list[Summary], list[str]], Figure | None]], ...] = (
    ("latency", "Latency per segment and end to end", fig_latency),
    ("exits", "Exit histogram", fig_exits),
    ("energy", "Energy per inference", fig_energy),
    ("accuracy_cost", "Accuracy vs expected cost", fig_accuracy_cost),
    ("throughput", "Achieved throughput vs the profile", fig_throughput),
    ("power", "Power over time", fig_power),
)


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def make_figures(sums: list[Summary], names: list[str]) -> dict[str, tuple[str, bytes]]:
    """{key: (title, PNG bytes)} of every figure that has data."""
    out: dict[str, tuple[str, bytes]] = {}
    est = _estimated(sums)
    for key, title, fn in FIGURES:
        fig = fn(sums, names)
        if fig is not None:
            if est and key in ("energy", "power"):
                title += " (ESTIMATED)"
            out[key] = (title, to_png(fig))
    return out
