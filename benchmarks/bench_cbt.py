"""CBT vs ADP-C single threshold on CamVid test: mIoU, masked GFLOPs, onnxruntime latency.

    .venv/bin/python benchmarks/bench_cbt.py --out /tmp/cbt_bench [--repeats 3]

Rows: full net (no exits, monolithic graph), single threshold 0.998, CBT [0.99, 0.998],
CBT [0.9, 0.998]. mIoU and GFLOPs are over the whole test split (torch, masks applied;
the onnxruntime predictions are checked to give the same mIoU); latency is the median
per image over interleaved onnxruntime runs (1 thread, numpy-only loop). Also writes a
bar chart of the per-class thresholds and overlays of where pixels exited into --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_ee.segmentation.cbt import CBTConfig, cbt_thresholds, collect_cbt_stats, single_thresholds
from edge_ee.segmentation.data import CLASS_NAMES, load_camvid, normalize_images
from edge_ee.segmentation.export import export_segments
from edge_ee.segmentation.metrics import confusion_matrix, mean_iou
from edge_ee.segmentation.model import load_pretrained, upsample_logits
from edge_ee.segmentation.ort_runner import FullRunner, PixelExitRunner
from edge_ee.segmentation.pixel_exit import CostModel, dense_masked_forward

PUBLISHED = ("Cityscapes HRNetV2-W48 (published): single 0.998 387.8 GFLOPs mIoU 81.31 -> "
             "CBT [0.99,0.998] 299.1 GFLOPs mIoU 80.69 (-23 % FLOPs, -0.62 mIoU)")


def evaluate(model, x: np.ndarray, y: np.ndarray, thr, batch: int = 16):
    confs, exits = np.zeros((11, 11), np.int64), []
    for i in range(0, len(x), batch):
        res = dense_masked_forward(model, torch.from_numpy(x[i:i + batch]), thr)
        pred = res.full_res_prediction(model.config.image_hw).numpy()
        confs += confusion_matrix(pred, y[i:i + batch])
        exits.append(res.exit_index.numpy())
    return mean_iou(confs), np.concatenate(exits)


def per_exit_miou(model, x, y, batch: int = 16) -> list[float]:
    n = model.config.num_exits
    confs = [np.zeros((11, 11), np.int64) for _ in range(n)]
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs = model(torch.from_numpy(x[i:i + batch]))
            for e, o in enumerate(outs):
                pred = upsample_logits(o, model.config.image_hw).argmax(1).numpy()
                confs[e] += confusion_matrix(pred, y[i:i + batch])
    return [mean_iou(c) for c in confs]


def plots(out: Path, thr: dict[str, np.ndarray], x_u8, exits: dict[str, np.ndarray],
          num_exits: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5))
    names = [k for k in thr if k.startswith("cbt")]
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ax.bar(np.arange(11) + j * width, thr[name], width, label=name)
    ax.set_xticks(np.arange(11) + 0.4 - width / 2, CLASS_NAMES, rotation=45, ha="right")
    ax.set_ylim(min(min(thr[n]) for n in names) - 0.01, 1.0)
    ax.set_ylabel("threshold T_k")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "cbt_thresholds.png", dpi=120)
    plt.close(fig)
    show = ["single_0.998", "cbt_0.99_0.998", "cbt_0.9_0.998"]
    for i in (0, 60, 150):
        fig, axs = plt.subplots(1, 1 + len(show), figsize=(4 * (1 + len(show)), 3.2))
        axs[0].imshow(x_u8[i])
        axs[0].set_title(f"test image {i}")
        for a, name in zip(axs[1:], show, strict=True):
            a.imshow(x_u8[i])
            a.imshow(exits[name][i], cmap="viridis", vmin=0, vmax=num_exits - 1, alpha=0.55,
                     extent=(0, 160, 120, 0), interpolation="nearest")
            a.set_title(f"{name}: exit 0..{num_exits - 1} (dark→light)", fontsize=9)
        for a in axs:
            a.axis("off")
        fig.tight_layout()
        fig.savefig(out / f"exit_overlay_{i:03d}.png", dpi=100)
        plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="output dir (plots, ONNX files)")
    ap.add_argument("--data", default=None)
    ap.add_argument("--weights", default=None, help="state_dict .pt (default: shipped)")
    ap.add_argument("--repeats", type=int, default=3, help="latency rounds over the test set")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_camvid(args.data, splits=("train", "test"))
    xtr, ytr = normalize_images(data["train"].images), data["train"].labels
    xte, yte = normalize_images(data["test"].images), data["test"].labels
    model = load_pretrained(Path(args.weights)) if args.weights else load_pretrained()
    cost = CostModel.of(model)

    t0 = time.perf_counter()
    means, present = collect_cbt_stats(model, xtr, ytr).class_means()
    thr = {"full": None, "single_0.998": single_thresholds(0.998, 11)}
    for a, b in ((0.99, 0.998), (0.9, 0.998)):
        thr[f"cbt_{a}_{b}"] = cbt_thresholds(means, CBTConfig(a, b), present).thresholds
    print(f"CBT calibration over {len(xtr)} train images: {time.perf_counter() - t0:.1f}s")
    print("per-exit test mIoU (dense):",
          ", ".join(f"exit{i} {100 * m:.2f}" for i, m in enumerate(per_exit_miou(model, xte, yte))))

    res = {name: evaluate(model, xte, yte, t) for name, t in thr.items()}
    exit_maps = {n: e for n, (_, e) in res.items()}
    gflops = {n: float(cost.flops(e).mean() / 1e9) for n, e in exit_maps.items()}

    ee = {n: t for n, t in thr.items() if t is not None}
    rep = export_segments(model, out / "onnx", ee, xte[:4])
    print("ONNX vs torch (4 test images): max|dlogits| "
          + ", ".join(f"{n} {d:.1e}" for n, d in rep.max_abs_diff.items()) + "; exit agreement "
          + ", ".join(f"{n} {a:.4f}" for n, a in rep.mask_agreement.items()))

    runners = {"full": FullRunner(out / "onnx")}
    runners.update({n: PixelExitRunner(out / "onnx", n) for n in ee})
    names = list(runners)
    lat = {n: [] for n in names}
    confs = {n: np.zeros((11, 11), np.int64) for n in names}
    for i in range(3):  # warm-up
        for n in names:
            runners[n].run(xte[i:i + 1])
    for r in range(args.repeats):
        for i in range(len(xte)):
            order = names[(i + r) % len(names):] + names[:(i + r) % len(names)]
            for n in order:
                o = runners[n].run(xte[i:i + 1])
                lat[n].append(o.latency_ns)
                if r == 0:
                    confs[n] += confusion_matrix(o.prediction, yte[i])
    ref = "single_0.998"
    print(f"\nCamVid test ({len(xte)} images, 120x160, {cost.num_tokens} tokens); "
          f"onnxruntime 1 thread, median of {args.repeats} interleaved runs per image")
    print(f"{'config':16s} {'mIoU':>6s} {'ortmIoU':>7s} {'GFLOPs':>7s} {'dFLOPs':>7s} "
          f"{'lat_ms':>7s} {'dLat':>6s}  share of tokens stopping at each exit")
    for n in names:
        miou = 100 * res[n][0]
        med = float(np.median(lat[n])) / 1e6
        dfl = 100 * (1 - gflops[n] / gflops[ref])
        dlat = 100 * (1 - med / (float(np.median(lat[ref])) / 1e6))
        frac = np.bincount(exit_maps[n].ravel(), minlength=model.config.num_exits) \
            / exit_maps[n].size
        print(f"{n:16s} {miou:6.2f} {100 * mean_iou(confs[n]):7.2f} {gflops[n]:7.4f} "
              f"{dfl:6.1f}% {med:7.3f} {dlat:5.1f}%  "
              + "/".join(f"{100 * f:.1f}%" for f in frac))
    print("(dFLOPs, dLat: saving relative to single_0.998)")
    print(PUBLISHED)
    for n in ("cbt_0.99_0.998", "cbt_0.9_0.998"):
        t = thr[n]
        print(f"{n} thresholds: " + ", ".join(f"{c} {v:.4f}" for c, v in
                                               zip(CLASS_NAMES, t, strict=True))
              + f"; lowest {CLASS_NAMES[int(np.argmin(t))]}, "
              f"highest {CLASS_NAMES[int(np.argmax(t))]}")
    plots(out, {n: t for n, t in thr.items() if t is not None}, data["test"].images,
          exit_maps, model.config.num_exits)
    print(f"plots written to {out}")


if __name__ == "__main__":
    main()
