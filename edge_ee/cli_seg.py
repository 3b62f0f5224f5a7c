"""`edge-ee seg-build`: a segmentation bundle (CBT, single threshold or monolithic) from CamVid.

  edge-ee seg-build --mode cbt --alpha 0.9 --beta 0.998 --out bundles/cbt_0.9_0.998
  edge-ee seg-build --mode single --threshold 0.998 --out bundles/single_0.998
  edge-ee seg-build --mode full --out bundles/full
  edge-ee-run bundles/cbt_0.9_0.998 --input ../shared/data/camvid-120x160.npz --out cbt.json
  edge-ee report full.json cbt.json --bundle bundles/full bundles/cbt_0.9_0.998

Every flag maps 1:1 to a field of `edge_ee.segmentation.build.SegBuildConfig`
(`--calib-images` → `calib_images`). No torch at import: the handler imports it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    p = sub.add_parser("seg-build", help="CamVid early-exit segmentation bundle (CBT / single / "
                                         "monolithic), validated against torch")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--mode", choices=("cbt", "single", "full"), default="cbt",
                   help="cbt: per-class thresholds in [alpha, beta]; single: one threshold; "
                        "full: the monolithic network without exits")
    p.add_argument("--alpha", type=float, default=0.99, help="CBT: the easiest class's threshold")
    p.add_argument("--beta", type=float, default=0.998, help="CBT: the hardest class's threshold")
    p.add_argument("--threshold", type=float, default=0.998, help="single: the threshold")
    p.add_argument("--data", default=None, help="camvid-120x160.npz (default ../shared/data)")
    p.add_argument("--weights", default=None, help="weights .pt with a .sha256 beside it "
                                                   "(default: the shipped ones)")
    p.add_argument("--calib-images", type=int, default=None,
                   help="CBT statistics from the first N training images (default: all)")
    p.add_argument("--validation-images", type=int, default=4,
                   help="test images the export is validated on against torch")
    p.add_argument("--golden-count", type=int, default=2, help="golden images in the bundle")
    p.add_argument("--name", default=None, help="model name in the manifest")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    return {"seg-build": cmd_seg_build}


def cmd_seg_build(a: argparse.Namespace) -> int:
    import json

    from edge_ee.segmentation.build import SegBuildConfig, build_seg_bundle

    cfg = SegBuildConfig(out=a.out, mode=a.mode, alpha=a.alpha, beta=a.beta,
                         threshold=a.threshold, data=a.data, weights=a.weights,
                         calib_images=a.calib_images, validation_images=a.validation_images,
                         golden_count=a.golden_count, name=a.name, overwrite=a.overwrite)
    path = build_seg_bundle(cfg)
    m = json.loads((path / "manifest.json").read_text())
    thr = m["segmentation"]["thresholds"]
    print(f"wrote {path}: {m['model']['name']}, {len(m['segments'])} segment(s), validation "
          f"{m['validation']}")
    if thr is not None:
        print("thresholds: " + ", ".join(f"{c} {t:.4f}" for c, t in zip(m["classes"], thr,
                                                                        strict=True)))
    return 0
