"""Figures of the segmentation report (matplotlib Agg, no pyplot state), as PNG bytes.

mIoU against GFLOPs per image and against measured median latency (one point per run,
the monolithic network as a square, single thresholds as triangles, CBT as circles),
the per-class thresholds as grouped bars, the share of tokens stopping at each exit,
and overlays of the token exit map on the first images of each run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from edge_ee.report_plots import _color, to_png

Summary = dict[str, Any]
MARKERS = {"monolithic": "s", "single": "^", "cbt": "o"}


def _marker(variant: str) -> str:
    return MARKERS.get(variant.split()[0], "D")


def fig_miou(sums: list[Summary], names: list[str], x_key: str) -> Figure | None:
    pts = [(i, s) for i, s in enumerate(sums) if s["miou"] is not None]
    if not pts:
        return None
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for i, s in pts:
        x = s["gflops_per_image"] if x_key == "gflops" else s["latency_ns"]["p50"] / 1e6
        ax.scatter([x], [100 * s["miou"]], marker=_marker(s["variant"]), s=70, color=_color(i),
                   label=f"{names[i]} ({s['variant']})", zorder=3)
        ax.annotate(names[i], (x, 100 * s["miou"]), textcoords="offset points", xytext=(5, 5),
                    fontsize=8)
    ax.set_xlabel("GFLOPs per image (masked)" if x_key == "gflops"
                  else "median latency per image (ms, measured)")
    ax.set_ylabel("mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def fig_thresholds(sums: list[Summary], names: list[str]) -> Figure | None:
    runs = [(i, s) for i, s in enumerate(sums) if s["thresholds"]]
    if not runs:
        return None
    classes = sums[0]["classes"]
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(runs)
    for j, (i, s) in enumerate(runs):
        ax.bar(np.arange(len(classes)) - 0.4 + width * (j + 0.5), s["thresholds"], width,
               color=_color(i), label=names[i])
    lo = min(min(s["thresholds"]) for _, s in runs)
    ax.set_ylim(max(0.0, lo - 0.02), 1.0)
    ax.set_xticks(range(len(classes)), classes, rotation=40, ha="right")
    ax.set_ylabel("threshold T_k")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def fig_exit_fractions(sums: list[Summary], names: list[str]) -> Figure | None:
    fig = Figure(figsize=(7, 0.5 + 0.45 * len(sums)), layout="constrained")
    ax = fig.subplots()
    n_exits = max(len(s["exit_fractions"]) for s in sums)
    left = np.zeros(len(sums))
    for e in range(n_exits):
        vals = np.array([100 * (s["exit_fractions"][e] if e < len(s["exit_fractions"]) else 0)
                         for s in sums])
        ax.barh(range(len(sums)), vals, left=left, color=_color(e), label=f"exit {e}")
        left += vals
    ax.set_yticks(range(len(sums)), names)
    ax.set_xlabel("tokens (4x4 pixel patches) stopping at each exit (%)")
    ax.legend(fontsize=7, ncol=n_exits, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return fig


def fig_overlays(sums: list[Summary], names: list[str]) -> Figure | None:
    runs = [(i, s) for i, s in enumerate(sums)
            if s["series"]["images"] is not None and s["series"]["exit_maps"]
            and s["variant"].split()[0] != "monolithic"]
    if not runs:
        return None
    imgs = runs[0][1]["series"]["images"]
    n_img = min(len(imgs), *(len(s["series"]["exit_maps"]) for _, s in runs))
    n_exits = max(len(s["exit_fractions"]) for _, s in runs)
    fig = Figure(figsize=(2.6 * (1 + len(runs)), 2.1 * n_img), layout="constrained")
    axs = np.atleast_2d(fig.subplots(n_img, 1 + len(runs), squeeze=False))
    h, w = imgs.shape[1:3]
    for r in range(n_img):
        axs[r, 0].imshow(imgs[r])
        axs[r, 0].set_title(f"image {runs[0][1]['series']['overlay_index'][r]}", fontsize=8)
        for c, (i, s) in enumerate(runs, start=1):
            th, tw = s["token_hw"]
            em = s["series"]["exit_maps"][r].reshape(th, tw)
            axs[r, c].imshow(imgs[r])
            im = axs[r, c].imshow(em, cmap="viridis", vmin=0, vmax=n_exits - 1, alpha=0.55,
                                  extent=(0, w, h, 0), interpolation="nearest")
            axs[r, c].set_title(names[i], fontsize=8)
    for a in axs.ravel():
        a.axis("off")
    cb = fig.colorbar(im, ax=axs[:, -1], ticks=range(n_exits), shrink=0.8)
    cb.set_label("exit where the pixel stopped", fontsize=8)
    return fig


def make_seg_figures(sums: list[Summary], names: list[str]) -> dict[str, tuple[str, bytes]]:
    """{key: (title, PNG bytes)} of every figure that has data."""
    figs = (("miou_gflops", "mIoU vs GFLOPs per image", lambda: fig_miou(sums, names, "gflops")),
            ("miou_latency", "mIoU vs measured latency",
             lambda: fig_miou(sums, names, "latency")),
            ("thresholds", "Per-class thresholds", lambda: fig_thresholds(sums, names)),
            ("exit_fractions", "Where tokens exit", lambda: fig_exit_fractions(sums, names)),
            ("overlays", "Exit maps (dark: early exit, light: late)",
             lambda: fig_overlays(sums, names)))
    out = {}
    for key, title, fn in figs:
        fig = fn()
        if fig is not None:
            out[key] = (title, to_png(fig))
    return out
