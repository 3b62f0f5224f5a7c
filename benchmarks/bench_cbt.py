"""CBT vs ADP-C single threshold vs the monolithic net on CamVid test, run as edge-ee bundles.

    .venv/bin/python benchmarks/bench_cbt.py --out /tmp/cbt_bench [--repeats 3] [--limit N]

Builds one bundle per row (`edge_ee.segmentation.bundle.write_seg_bundle`, validated
against torch): full (monolithic graph, no exits), single threshold 0.998, CBT
[0.99, 0.998], CBT [0.9, 0.998]. mIoU, GFLOPs and latency all come from the device
runner (`device_runners.executor.execute`, the code `edge-ee-run` uses; 1
onnxruntime thread, gathered execution, one image at a time): mIoU from its class maps,
GFLOPs from its token exit maps with the manifest's cost model, latency the median per
image over `--repeats` interleaved rounds (configs rotate per image so drift hits all
alike). torch's dense masked mIoU is printed beside it as a check. `--no-exit` rows run
the EE bundles with every token through every segment (the split overhead).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_runners.backends import open_backend
from device_runners.executor import execute
from device_runners.golden import self_check
from device_runners.manifest import load_bundle, sha256_file
from device_runners.recorders import confusion
from edge_ee.report import masked_flops
from edge_ee.segmentation.build import calibration_record
from edge_ee.segmentation.bundle import SegBundleOptions, write_seg_bundle
from edge_ee.segmentation.cbt import CBTConfig, cbt_thresholds, collect_cbt_stats, single_thresholds
from edge_ee.segmentation.data import CLASS_NAMES, IGNORE_INDEX, load_camvid, normalize_images
from edge_ee.segmentation.metrics import confusion_matrix, mean_iou
from edge_ee.segmentation.model import WEIGHTS_FILE, load_pretrained
from edge_ee.segmentation.pixel_exit import dense_masked_forward

PUBLISHED = ("Cityscapes HRNetV2-W48 (published): single 0.998 387.8 GFLOPs mIoU 81.31 -> "
             "CBT [0.99,0.998] 299.1 GFLOPs mIoU 80.69 (-23 % FLOPs, -0.62 mIoU)")


def torch_miou(model, x: np.ndarray, y: np.ndarray, thr, batch: int = 16) -> float:
    conf = np.zeros((11, 11), np.int64)
    for i in range(0, len(x), batch):
        res = dense_masked_forward(model, torch.from_numpy(x[i:i + batch]), thr)
        conf += confusion_matrix(res.full_res_prediction(model.config.image_hw).numpy(),
                                 y[i:i + batch])
    return mean_iou(conf)


def build_bundles(model, out: Path, xtr, ytr, vx) -> dict[str, Path]:
    t0 = time.perf_counter()
    means, present = collect_cbt_stats(model, xtr, ytr).class_means()
    print(f"CBT statistics over {len(xtr)} train images: {time.perf_counter() - t0:.1f} s")
    configs = {"full": ("full", None, None), "single_0.998": ("single", None, 0.998)}
    for a, b in ((0.99, 0.998), (0.9, 0.998)):
        configs[f"cbt_{a}_{b}"] = ("cbt", cbt_thresholds(means, CBTConfig(a, b), present), None)
    paths = {}
    for name, (mode, res, t) in configs.items():
        thr = res.thresholds if res is not None else (single_thresholds(t, 11) if t else None)
        t0 = time.perf_counter()
        paths[name] = write_seg_bundle(
            model, out / "bundles" / name, thr, vx, calibration_record(mode, res, t, len(xtr)),
            f"camvid-eeseg-{name}", sha256_file(WEIGHTS_FILE), SegBundleOptions(overwrite=True))
        print(f"bundle {name}: {time.perf_counter() - t0:.1f} s")
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="output dir (bundles)")
    ap.add_argument("--data", default=None)
    ap.add_argument("--repeats", type=int, default=3, help="latency rounds over the test set")
    ap.add_argument("--limit", type=int, default=None, help="first N test images only")
    ap.add_argument("--no-exit", action="store_true", help="also time EE bundles without exits")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    data = load_camvid(args.data, splits=("train", "test"))
    xtr, ytr = normalize_images(data["train"].images), data["train"].labels
    xte, yte = normalize_images(data["test"].images), data["test"].labels
    if args.limit:
        xte, yte = xte[:args.limit], yte[:args.limit]
    model = load_pretrained()
    paths = build_bundles(model, out, xtr, ytr, xte[:4])

    bundles = {n: load_bundle(p) for n, p in paths.items()}
    backends = {n: open_backend(b) for n, b in bundles.items()}
    for n, b in bundles.items():
        self_check(b, backends[n])

    def run(name: str, image: np.ndarray):
        key = name.split()[0]
        return execute(bundles[key], backends[key], image, name.endswith("--no-exit"))

    rows = list(bundles) + ([f"{n} --no-exit" for n in bundles if n != "full"]
                            if args.no_exit else [])
    lat = {n: [] for n in rows}
    confs = {n: np.zeros((11, 11), np.int64) for n in rows}
    tpe = {n: [] for n in rows}
    for i in range(3):
        for n in rows:
            run(n, xte[i:i + 1])
    for r in range(args.repeats):
        for i in range(len(xte)):
            k = (i + r) % len(rows)
            for n in rows[k:] + rows[:k]:
                o = run(n, xte[i:i + 1])
                lat[n].append(o.latency_ns)
                if r == 0:
                    confs[n] += confusion(o.prediction[0], yte[i], 11, IGNORE_INDEX)
                    tpe[n].append(np.bincount(o.exit[0], minlength=4))
    thr = {n: b.manifest["segmentation"]["thresholds"] for n, b in bundles.items()}
    print(f"\nCamVid test ({len(xte)} images, 120x160, 1200 tokens); device runner "
          f"(onnxruntime 1 thread), median latency of {args.repeats} interleaved rounds")
    print(f"{'config':24s} {'mIoU':>6s} {'torch':>6s} {'GFLOPs':>7s} {'dFLOPs':>7s} "
          f"{'lat_ms':>7s} {'dLat':>7s}  tokens stopping at exit 0/1/2/3")
    base_fl = base_lat = None
    for n in rows:
        cost = bundles[n.split()[0]].manifest["segmentation"]["cost"]
        gfl = float(masked_flops(np.array(tpe[n]), cost).mean() / 1e9)
        med = float(np.median(lat[n])) / 1e6
        base_fl, base_lat = base_fl or gfl, base_lat or med
        t = thr[n.split()[0]]
        tm = torch_miou(model, xte, yte, None if (t is None or "no-exit" in n) else np.array(t))
        frac = np.sum(tpe[n], 0) / np.sum(tpe[n])
        print(f"{n:24s} {100 * mean_iou(confs[n]):6.2f} {100 * tm:6.2f} {gfl:7.4f} "
              f"{100 * (gfl / base_fl - 1):+6.1f}% {med:7.3f} {100 * (med / base_lat - 1):+6.1f}%  "
              + "/".join(f"{100 * f:.1f}%" for f in frac))
    print("(dFLOPs, dLat: relative to the monolithic full network)")
    print(PUBLISHED)
    for n in ("cbt_0.99_0.998", "cbt_0.9_0.998"):
        t = thr[n]
        print(f"{n} thresholds: " + ", ".join(f"{c} {v:.4f}" for c, v in
                                               zip(CLASS_NAMES, t, strict=True))
              + f"; lowest {CLASS_NAMES[int(np.argmin(t))]}, highest "
              f"{CLASS_NAMES[int(np.argmax(t))]}")
    print(f"bundles in {out / 'bundles'}; run them with edge-ee-run BUNDLE --input "
          "camvid-120x160.npz and compare with edge-ee report")


if __name__ == "__main__":
    main()
