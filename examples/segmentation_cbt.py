"""Class-based thresholds (CBT) on CamVid: a per-pixel early-exit bundle, run on the device.

    python examples/segmentation_cbt.py --data ../shared/data --out edge-ee-out/camvid-cbt [--quick]

Calibrates CBT's per-class thresholds in [0.9, 0.998] on CamVid training images with the
shipped early-exit segmentation network, exports the token-exit bundle (validated against
torch's gathered execution), then runs test images through the device executor and prints
mIoU, the share of tokens leaving at each exit, and the expected FLOPs against the full net.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from device_runners.backends import open_backend
from device_runners.executor import execute
from device_runners.manifest import load_bundle
from device_runners.recorders import confusion
from edge_ee.report import masked_flops
from edge_ee.segmentation.build import SegBuildConfig, build_seg_bundle
from edge_ee.segmentation.data import IGNORE_INDEX, load_camvid, normalize_images
from edge_ee.segmentation.metrics import mean_iou

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--out", default="edge-ee-out/camvid-cbt")
    ap.add_argument("--quick", action="store_true", help="few images (CI)")
    a = ap.parse_args()
    camvid = Path(a.data) / "camvid-120x160.npz"
    path = build_seg_bundle(SegBuildConfig(
        out=a.out, mode="cbt", alpha=0.9, beta=0.998, data=str(camvid),
        calib_images=8 if a.quick else None, validation_images=2, golden_count=1, overwrite=True))
    bundle = load_bundle(path)
    backend = open_backend(bundle)
    test = load_camvid(camvid, splits=("test",))["test"]
    idx = np.linspace(0, len(test) - 1, 6 if a.quick else len(test)).astype(int)
    k = len(bundle.manifest["classes"])
    conf, per_exit = np.zeros((k, k), np.int64), []
    for i in idx:
        out = execute(bundle, backend, normalize_images(test.images[i : i + 1]))
        # token outcomes have one row per image of the call: (1, H, W) and (1, tokens)
        conf += confusion(out.prediction[0], test.labels[i], k, IGNORE_INDEX)
        per_exit.append(np.bincount(out.exit[0], minlength=len(bundle.segments)))
    cost = bundle.manifest["segmentation"]["cost"]
    flops = masked_flops(np.array(per_exit), cost).mean() / cost["full_flops"]
    share = np.sum(per_exit, 0) / np.sum(per_exit)
    print(f"{len(idx)} CamVid test images on the device executor: mIoU {100 * mean_iou(conf):.2f}, "
          f"{flops:.3f} of the full network's FLOPs, tokens leaving at each exit "
          + " / ".join(f"{100 * s:.1f}%" for s in share) + f"; bundle {path}")


if __name__ == "__main__":
    main()
