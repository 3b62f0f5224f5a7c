"""What the mIoU metric adds to the shared report: per-class thresholds T_k (CBT's
criterion), IoU per class, and overlays of where each pixel's token stopped (figures
import matplotlib only when drawn)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_ee.report.tables import Table

Summary = dict[str, Any]


def per_class_tables(sums: list[Summary], names: list[str]) -> list[Table]:
    classes = sums[0]["classes"]
    with_thr = [(s, nm) for s, nm in zip(sums, names, strict=True) if s["thresholds"]]
    out = []
    if with_thr:
        out.append(Table("thresholds", "Per-class thresholds T_k baked into the graphs",
                         ["class", *[nm for _, nm in with_thr]],
                         [[c, *[s["thresholds"][i] for s, _ in with_thr]]
                          for i, c in enumerate(classes)]))
    out.append(Table("iou_per_class", "IoU per class (%)", ["class", *names],
                     [[c, *[None if s["iou_per_class"] is None or s["iou_per_class"][i] is None
                            else 100 * s["iou_per_class"][i] for s in sums]]
                      for i, c in enumerate(classes)]))
    return out


def fig_thresholds(sums: list[Summary], names: list[str]) -> Any:
    from matplotlib.figure import Figure

    from edge_ee.report.plots import color
    runs = [(i, s) for i, s in enumerate(sums) if s["thresholds"]]
    if not runs:
        return None
    classes = sums[0]["classes"]
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(runs)
    for j, (i, s) in enumerate(runs):
        ax.bar(np.arange(len(classes)) - 0.4 + width * (j + 0.5), s["thresholds"], width,
               color=color(i), label=names[i])
    lo = min(min(s["thresholds"]) for _, s in runs)
    ax.set_ylim(max(0.0, lo - 0.02), 1.0)
    ax.set_xticks(range(len(classes)), classes, rotation=40, ha="right")
    ax.set_ylabel("threshold T_k")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def fig_overlays(sums: list[Summary], names: list[str]) -> Any:
    from matplotlib.figure import Figure
    runs = [(i, s) for i, s in enumerate(sums)
            if s["series"].get("images") is not None and s["series"]["exit_maps"]
            and not s["variant"].startswith("monolithic")]
    if not runs:
        return None
    imgs = runs[0][1]["series"]["images"]
    n_img = min(len(imgs), *(len(s["series"]["exit_maps"]) for _, s in runs))
    n_exits = max(len(s["exit_fractions"]) for _, s in runs)
    fig = Figure(figsize=(2.6 * (1 + len(runs)), 2.1 * n_img), layout="constrained")
    axs = np.atleast_2d(fig.subplots(n_img, 1 + len(runs), squeeze=False))
    h, w = imgs.shape[1:3]
    im = None
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


def per_class_figures(sums: list[Summary], names: list[str]) -> list[tuple[str, str, Any]]:
    figs = [("thresholds", "Per-class thresholds", fig_thresholds(sums, names)),
            ("overlays", "Exit maps (dark: early exit, light: late)", fig_overlays(sums, names))]
    return [(k, t, f) for k, t, f in figs if f is not None]
