"""The prune-data report: tables (CSV + JSON), figures (matplotlib) and Markdown/HTML pages.

* `summary.csv/json`: test accuracy mean ± std over seeds per method, ratio and trained
  subset (kept / discarded); the full-data reference.
* `accuracy_vs_ratio.png`: one line per method with ± std bars.
* `discard_heatmap.png`: per-class fraction discarded, one panel per ratio, row per method.
* `report.md` and `report.html`: the tables above plus D_p vs kept, the exit-location
  ablation and each scorer's cost (wall time, CPU time, energy — marked *estimated* when
  the power source is an estimate — and the fraction of one full training run).
"""

from __future__ import annotations

import csv
import html
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_ee.dataprune.harness import Evaluation


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_figure(fig, path: Path, **kw) -> None:
    """savefig through a temporary file in the same folder, then rename."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, **kw)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def summarize(ev: Evaluation) -> list[dict[str, Any]]:
    """One row per (method, ratio, subset): mean/std test accuracy over seeds."""
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for r in ev.runs:
        groups.setdefault((r["method"], float(r["ratio"]), r["subset"]), []).append(r)
    rows = []
    for (method, ratio, subset), rs in sorted(groups.items()):
        acc = np.array([r["test_accuracy"] for r in rs]) * 100
        rows.append({"method": method, "ratio": ratio, "subset": subset, "seeds": len(rs),
                     "n_train": rs[0]["n_train"], "steps": rs[0]["steps"],
                     "acc_mean": float(acc.mean()),
                     "acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                     "train_wall_s_mean": float(np.mean([r["train_wall_s"] for r in rs])),
                     "train_cpu_s_mean": _mean_or_none([r.get("train_cpu_s") for r in rs])})
    return rows


def _mean_or_none(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _find(rows, method, ratio, subset="kept"):
    return next((r for r in rows if r["method"] == method and abs(r["ratio"] - ratio) < 1e-9
                 and r["subset"] == subset), None)


def _fmt(row) -> str:
    return "–" if row is None else f"{row['acc_mean']:.2f} ± {row['acc_std']:.2f} (n={row['seeds']})"


def cost_rows(ev: Evaluation, rows) -> list[dict[str, Any]]:
    full = _find(rows, "full", 0.0, "all")
    full_s = full["train_wall_s_mean"] if full else None
    full_cpu = full["train_cpu_s_mean"] if full else None
    out = []
    for label, c in ev.scorer_costs.items():
        e = c.get("energy_mj")
        out.append({"scorer": label, "wall_s": c["wall_s"], "cpu_s": c["cpu_s"],
                    "energy_wh": None if e is None else e / 3.6e6,
                    "energy_estimated": c.get("energy_estimated"),
                    "power_source": c.get("power_source"),
                    "fraction_of_full_training": None if not full_s else c["wall_s"] / full_s,
                    "cpu_fraction_of_full_training": None if not full_cpu else c["cpu_s"] / full_cpu})
    return out


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(lines)


def plot_accuracy(rows, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in sorted({r["method"] for r in rows if r["subset"] == "kept" and "@" not in r["method"]}):
        rs = sorted((r for r in rows if r["method"] == m and r["subset"] == "kept"),
                    key=lambda r: r["ratio"])
        ax.errorbar([r["ratio"] * 100 for r in rs], [r["acc_mean"] for r in rs],
                    [r["acc_std"] for r in rs], marker="o", capsize=3, label=m)
    full = _find(rows, "full", 0.0, "all")
    if full:
        ax.axhline(full["acc_mean"], color="k", ls="--", lw=1, label="full data")
    ax.set_xlabel("training samples discarded (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_heatmap(ev: Evaluation, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = sorted({float(r) for d in ev.discard_per_class.values() for r in d})
    methods = list(ev.discard_per_class)
    fig, axes = plt.subplots(1, len(ratios), figsize=(4.5 * len(ratios), 0.5 * len(methods) + 2.5),
                             squeeze=False)
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")  # methods not run at this ratio
    for j, (ax, r) in enumerate(zip(axes[0], ratios, strict=True)):
        grid = np.array([ev.discard_per_class[m].get(str(r), [np.nan] * len(ev.classes))
                         for m in methods], float)
        im = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap=cmap, aspect="auto")
        ax.set_yticks(range(len(methods)), methods if j == 0 else [""] * len(methods))
        ax.set_xticks(range(len(ev.classes)), ev.classes, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{r:.0%} discarded")
    fig.colorbar(im, ax=axes[0].tolist(), label="fraction of the class discarded")
    _save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_report(ev: Evaluation, out: str | Path, published: dict[str, str] | None = None) -> Path:
    """Write every table, figure and page under `out`; returns report.md's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(ev)
    costs = cost_rows(ev, rows)
    with open(out / ".summary.csv.tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["method"])
        w.writeheader()
        w.writerows(rows)
    os.replace(out / ".summary.csv.tmp", out / "summary.csv")
    doc = {"dataset": ev.dataset, "n_train": ev.n_train, "n_test": ev.n_test,
           "config": ev.config, "summary": rows, "scorer_costs": costs,
           "scorer_meta": ev.scorer_meta, "discard_per_class": ev.discard_per_class,
           "classes": list(ev.classes), "runs": ev.runs}
    _atomic_text(out / "summary.json", json.dumps(doc, indent=1, default=str))
    if rows:
        plot_accuracy(rows, out / "accuracy_vs_ratio.png", f"{ev.dataset}: kept-set accuracy")
    if ev.discard_per_class:
        plot_heatmap(ev, out / "discard_heatmap.png")

    ratios = sorted({r["ratio"] for r in rows if r["subset"] == "kept" and "@" not in r["method"]})
    methods = sorted({r["method"] for r in rows if r["subset"] == "kept" and "@" not in r["method"]})
    md = [f"# Dataset pruning on {ev.dataset}", "",
          f"{ev.n_train} training samples, {ev.n_test} test samples; model "
          f"{ev.config.get('model')}, {ev.config.get('train_epochs')} epochs per training run "
          "(of the set trained on). Methods are compared at an equal number of samples trained "
          "on: at a ratio every method keeps the same number of samples and trains the same "
          "epochs, so the same optimizer steps. Test accuracy (%) mean ± std over seeds.", "",
          _table(["method", *[f"{r:.0%} pruned" for r in ratios]],
                 [[m, *[_fmt(_find(rows, m, r)) for r in ratios]] for m in methods])]
    full = _find(rows, "full", 0.0, "all")
    if full:
        md += ["", f"Full training set: {_fmt(full)}."]
    dp = [r for r in rows if r["subset"] == "discarded"]
    if dp:
        md += ["", "## Trained on the discarded set D_p versus the kept set", "",
               _table(["method", "ratio", "kept", "discarded D_p"],
                      [[d["method"], f"{d['ratio']:.0%}", _fmt(_find(rows, d["method"], d["ratio"])),
                        _fmt(d)] for d in dp])]
    abl = [r for r in rows if r["method"].startswith("eeprune@")]
    if abl:
        r0 = abl[0]["ratio"]
        main = ev.config.get("exit")
        cells = {m["method"].split("@")[1]: _fmt(m) for m in abl}
        cells[str(main)] = _fmt(_find(rows, "eeprune", r0))
        md += ["", f"## EEPrune exit location ({r0:.0%} pruned)", "",
               _table(list(cells), [list(cells.values())])]
    if costs:
        md += ["", "## Scoring cost", "",
               "Energy is **estimated** (profile model of idle + whole-machine CPU utilisation; "
               "on a shared machine it includes other users' load) wherever marked; CPU "
               "seconds are this process's own.", "",
               _table(["scorer", "wall s", "CPU s", "energy Wh", "wall / full training run",
                       "CPU / full training run"],
                      [[c["scorer"], f"{c['wall_s']:.1f}", f"{c['cpu_s']:.1f}",
                        "–" if c["energy_wh"] is None else
                        f"{c['energy_wh']:.4f}{' (estimated)' if c['energy_estimated'] else ''}",
                        "–" if c["fraction_of_full_training"] is None else
                        f"{c['fraction_of_full_training']:.2f}",
                        "–" if c["cpu_fraction_of_full_training"] is None else
                        f"{c['cpu_fraction_of_full_training']:.2f}"] for c in costs])]
    meta = {k: v for k, v in ev.scorer_meta.items() if k.startswith("eeprune") and "@0" in k}
    if meta:
        md += ["", "## EEPrune at each ratio (our exact-ratio ranking)", "",
               _table(["run", "implied confidence threshold", "discarded not meeting conditions"],
                      [[k, f"{v.get('implied_threshold', float('nan')):.3f}",
                        str(v.get("discarded_not_meeting_conditions"))] for k, v in meta.items()])]
    if published:
        md += ["", "## Published (thesis)", "", *[f"- {k}: {v}" for k, v in published.items()]]
    md += ["", "![accuracy versus ratio](accuracy_vs_ratio.png)", "",
           "![per-class discard heatmap](discard_heatmap.png)", ""]
    text = "\n".join(md)
    _atomic_text(out / "report.md", text)
    _atomic_text(out / "report.html", _html(text, ev.dataset))
    return out / "report.md"


def _html(md: str, title: str) -> str:
    """A minimal self-contained page from the Markdown above (tables, headings, images)."""
    body, table = [], []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            cells = [[c.strip() for c in t.strip("|").split("|")] for t in table if "---" not in t]
            body.append("<table border=1 cellpadding=4>" + "".join(
                "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c)}</{'th' if i == 0 else 'td'}>"
                                 for c in row) + "</tr>" for i, row in enumerate(cells)) + "</table>")
            table = []
        if line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            body.append(f'<p><img src="{html.escape(src)}" style="max-width:100%"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"</head><body>{''.join(body)}</body></html>")
