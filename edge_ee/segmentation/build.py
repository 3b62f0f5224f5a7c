"""Build segmentation bundles from the shipped (or given) weights and CamVid: `edge-ee seg-build`.

`SegBuildConfig` is the frozen config whose fields the CLI flags map to 1:1. Modes:
`cbt` (per-class thresholds from [alpha, beta] on training pixels, METHODS.md §3),
`single` (ADP-C's one threshold for every class), `full` (the monolithic network, no
exits — the baseline every configuration is compared with). CBT statistics come from
the first `calib_images` training images (all when unset); a class with no pixel in
them gets β (treated as the hardest: no evidence, so it exits only as cautiously as the
most cautious known class) and is listed under `calibration.absent_classes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_ee.segmentation.cbt import CBTConfig, CBTResult, cbt_thresholds, single_thresholds
from edge_ee.segmentation.data import CLASS_NAMES
from edge_ee.segmentation.errors import SegmentationError

MODES = ("cbt", "single", "full")
ABSENT_RULE = ("a class with no training pixel gets beta: with no evidence it is treated as the "
               "hardest class")


@dataclass(frozen=True)
class SegBuildConfig:
    """One segmentation bundle (flags of `edge-ee seg-build` map 1:1 to these fields)."""

    out: str
    mode: str = "cbt"
    alpha: float = 0.99
    beta: float = 0.998
    threshold: float = 0.998
    data: str | None = None
    weights: str | None = None
    calib_images: int | None = None
    validation_images: int = 4
    golden_count: int = 2
    name: str | None = None
    overwrite: bool = False
    formats: tuple[str, ...] = ("onnx",)
    int8: bool = False
    int8_calib_images: int = 16

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SegmentationError(f"mode {self.mode!r}: choose one of {MODES}")
        if self.mode == "cbt":
            CBTConfig(self.alpha, self.beta)  # raises for a range outside (0,1] or alpha > beta
        if self.mode == "single":
            single_thresholds(self.threshold, 2)
        if self.calib_images is not None and self.calib_images < 1:
            raise SegmentationError(f"calib_images must be >= 1 or unset, got {self.calib_images}")
        if self.int8 and self.mode == "full":
            raise SegmentationError("--int8 is for early-exit bundles (cbt, single); the "
                                    "monolithic baseline stays fp32")
        if self.int8_calib_images < 2:
            raise SegmentationError(f"int8_calib_images must be >= 2, got {self.int8_calib_images}")
        if not self.formats:
            raise SegmentationError("formats must name at least one of onnx, tflite")
        if not 1 <= self.golden_count <= self.validation_images:
            raise SegmentationError("need 1 <= golden_count <= validation_images, got "
                                    f"{self.golden_count} and {self.validation_images}")

    def default_name(self) -> str:
        if self.mode == "cbt":
            return f"camvid-eeseg-cbt-{self.alpha:g}-{self.beta:g}"
        return f"camvid-eeseg-single-{self.threshold:g}" if self.mode == "single" \
            else "camvid-eeseg-full"


def calibration_record(mode: str, result: CBTResult | None, threshold: float | None,
                       calib_images: int) -> dict[str, Any]:
    """The manifest's `calibration` section (thresholds, raw confidences, absent classes)."""
    if mode == "full":
        return {"kind": "monolithic"}
    if mode == "single":
        return {"kind": "single", "threshold": threshold, "rule": "ADP-C: max_k softmax_k >= t"}
    assert result is not None
    absent = [CLASS_NAMES[k] for k in np.flatnonzero(~result.present)]
    return {"kind": "cbt", "alpha": result.config.alpha, "beta": result.config.beta,
            "split": "train", "images": calib_images,
            "confidence_top1_minus_top2": [None if np.isnan(v) else float(v)
                                           for v in result.confidence],
            "present": result.present.tolist(), "absent_classes": absent,
            "absent_rule": ABSENT_RULE, "method": "METHODS.md §3 (CBT)"}


def build_seg_bundle(cfg: SegBuildConfig) -> Path:
    """Load weights and data, compute the thresholds, write and check one bundle."""
    import torch

    from device_runners.manifest import sha256_file
    from edge_ee.segmentation.bundle import SegBundleOptions, write_seg_bundle
    from edge_ee.segmentation.cbt import collect_cbt_stats
    from edge_ee.segmentation.data import load_camvid, normalize_images
    from edge_ee.segmentation.model import WEIGHTS_FILE, load_pretrained

    torch.set_num_threads(1)
    weights = Path(cfg.weights) if cfg.weights else WEIGHTS_FILE
    model = load_pretrained(weights)
    splits = ("train", "test") if cfg.mode == "cbt" or cfg.int8 else ("test",)
    data = load_camvid(cfg.data, splits=splits)
    thresholds, result, n_cal = None, None, 0
    if cfg.mode == "cbt":
        tr = data["train"]
        n_cal = len(tr) if cfg.calib_images is None else min(cfg.calib_images, len(tr))
        stats = collect_cbt_stats(model, normalize_images(tr.images[:n_cal]), tr.labels[:n_cal])
        means, present = stats.class_means()
        result = cbt_thresholds(means, CBTConfig(cfg.alpha, cfg.beta), present)
        thresholds = result.thresholds
    elif cfg.mode == "single":
        thresholds = single_thresholds(cfg.threshold, model.config.num_classes)
    vx = normalize_images(data["test"].images[:cfg.validation_images])
    cal = calibration_record(cfg.mode, result, cfg.threshold, n_cal)
    cal_x = None
    if cfg.int8:  # spread over the training split (it is sorted by sequence)
        tr = data["train"]
        pick = np.linspace(0, len(tr) - 1, min(cfg.int8_calib_images, len(tr))).astype(int)
        cal_x = normalize_images(tr.images[pick])
    return write_seg_bundle(model, cfg.out, thresholds, vx, cal, cfg.name or cfg.default_name(),
                            sha256_file(weights),
                            SegBundleOptions(golden_count=cfg.golden_count, overwrite=cfg.overwrite,
                                             formats=tuple(cfg.formats), int8=cfg.int8),
                            calibration_images=cal_x)
