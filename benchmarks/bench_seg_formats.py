"""A CBT segmentation bundle on ONNX fp32, TFLite fp32, int8 (ONNX QDQ, TFLite) and in batch mode.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_seg_formats.py --out /tmp/seg_formats \\
        [--bundle EXISTING] [--batch-size 8] [--repeats 2]

Builds one CamVid CBT bundle ([0.9, 0.998] by default, statistics over every training
image) with `--formats onnx,tflite --int8` (`edge-ee seg-build`), or takes `--bundle`,
then runs the whole CamVid test split through the device executor
(`device_runners.executor.execute`, the code `edge-ee-run` uses; 1 thread per runtime):
ONNX fp32, TFLite fp32, int8 ONNX (QDQ) and int8 TFLite (PT2E) one image at a time,
and ONNX fp32 in batches of `--batch-size` images. The configurations are interleaved per chunk of images (the
order rotates) so load drift hits all alike. Prints per configuration the mIoU (class
maps vs the labels), token exit and pixel agreement with ONNX fp32 single, the share of
tokens per exit and the per-image latency (median and mean; batch: the batch's latency
divided by its images), with the `uptime` load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_runners.backends import open_backend
from device_runners.executor import execute
from device_runners.manifest import load_bundle
from device_runners.recorders import confusion
from edge_ee.segmentation.data import IGNORE_INDEX, load_camvid, normalize_images
from edge_ee.segmentation.metrics import mean_iou

SINGLE = {"onnx fp32": "onnxruntime", "tflite fp32": "tflite", "onnx int8": "onnxruntime-int8",
          "tflite int8": "tflite-int8"}
BATCH = "onnx fp32 batch"


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def build(out: Path, alpha: float, beta: float, data: str | None) -> Path:
    from edge_ee.segmentation.build import SegBuildConfig, build_seg_bundle
    t0 = time.perf_counter()
    path = build_seg_bundle(SegBuildConfig(
        out=str(out), mode="cbt", alpha=alpha, beta=beta, data=data, formats=("onnx", "tflite"),
        int8=True, overwrite=True))
    print(f"built {path} in {time.perf_counter() - t0:.0f} s")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/seg_formats", help="bundle folder to build")
    ap.add_argument("--bundle", default=None, help="use this bundle (onnx, tflite, onnx-int8)")
    ap.add_argument("--data", default=None, help="camvid-120x160.npz (default ../shared/data)")
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--beta", type=float, default=0.998)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds over the split")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    path = Path(args.bundle) if args.bundle else build(Path(args.out), args.alpha, args.beta,
                                                      args.data)
    bundle = load_bundle(path)
    test = load_camvid(args.data, splits=("test",))["test"]
    x, y = normalize_images(test.images), test.labels
    backends = {name: open_backend(bundle, be) for name, be in SINGLE.items()}
    backends[BATCH] = backends["onnx fp32"]
    names = [*SINGLE, BATCH]
    lat = {n: [] for n in names}
    conf = {n: np.zeros((11, 11), np.int64) for n in names}
    exits = {n: [] for n in names}
    preds = {n: [] for n in names}
    for n in SINGLE:  # warm-up
        execute(bundle, backends[n], x[:1])
    execute(bundle, backends[BATCH], x[:args.batch_size])
    print(f"load before: {load()}")
    t_start = time.perf_counter()
    bs = args.batch_size
    for r in range(args.repeats):
        for c, start in enumerate(range(0, len(x), bs)):
            chunk = slice(start, min(start + bs, len(x)))
            k = (c + r) % len(names)
            for n in names[k:] + names[:k]:
                if n == BATCH:
                    o = execute(bundle, backends[n], x[chunk])
                    lat[n] += [o.latency_ns / len(o.exit)] * len(o.exit)
                    outs = list(zip(o.exit, o.prediction, strict=True))
                else:
                    outs = []
                    for i in range(chunk.start, chunk.stop):
                        o = execute(bundle, backends[n], x[i:i + 1])
                        lat[n].append(o.latency_ns)
                        outs.append((o.exit[0], o.prediction[0]))
                if r == 0:
                    for j, (e, p) in enumerate(outs):
                        conf[n] += confusion(p, y[chunk.start + j], 11, IGNORE_INDEX)
                        exits[n].append(e)
                        preds[n].append(p)
    print(f"load after: {load()} ({time.perf_counter() - t_start:.0f} s)")
    ref_e, ref_p = np.array(exits["onnx fp32"]), np.array(preds["onnx fp32"])
    rows = {}
    print(f"\nCamVid test split, {len(x)} images; CBT [{args.alpha}, {args.beta}] bundle {path}; "
          f"1 thread; latency per image over {args.repeats} interleaved rounds")
    print(f"{'config':17s} {'mIoU':>6s} {'exit agr':>8s} {'pix agr':>8s} {'p50 ms':>7s} "
          f"{'mean ms':>7s}  tokens per exit 0/1/2/3")
    for n in names:
        e, p = np.array(exits[n]), np.array(preds[n])
        frac = np.bincount(e.ravel(), minlength=4) / e.size
        rows[n] = {"miou": mean_iou(conf[n]), "exit_agreement": float((e == ref_e).mean()),
                   "pixel_agreement": float((p == ref_p).mean()),
                   "latency_ms_p50": float(np.median(lat[n])) / 1e6,
                   "latency_ms_mean": float(np.mean(lat[n])) / 1e6,
                   "tokens_per_exit": frac.tolist()}
        rw = rows[n]
        print(f"{n:17s} {100 * rw['miou']:6.2f} {rw['exit_agreement']:8.5f} "
              f"{rw['pixel_agreement']:8.5f} {rw['latency_ms_p50']:7.2f} "
              f"{rw['latency_ms_mean']:7.2f}  " + "/".join(f"{100 * f:.1f}%" for f in frac))
    print(f"({BATCH}: batches of {bs}; latency = batch latency / images in it)")
    sizes = {f: sum((path / s["files"][f]).stat().st_size for s in bundle.segments)
             for f in ("onnx", "tflite", "onnx-int8", "tflite-int8")}
    print("segment files: " + ", ".join(f"{f} {v / 1e3:.0f} kB" for f, v in sizes.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"bundle": str(path), "images": len(x),
                                               "rows": rows, "bytes": sizes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
