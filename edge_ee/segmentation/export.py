"""ONNX export of the pixel-exit segments, with thresholds baked in, validated against torch.

Files under the output directory:
* `full.onnx` — monolithic no-exit network, image (1,3,H,W) → class map (1,H,W) int64;
* `assemble.onnx` — token logits (1,K,h,w) → bilinear upsample → class map (1,H,W);
* `<config>/seg0.onnx` — image → (feature grid (1,C,h,w), logits (h*w,K), exit mask (h*w,));
* `<config>/seg{s}.onnx`, s ≥ 1 — (feature grid, idx (M,) int64 remaining tokens) →
  (updated grid, logits (M,K), exit mask (M,)); M is a dynamic dimension. The last
  segment's mask is all true. Per-class thresholds are constants inside each graph.
* `manifest.json` — token grid, classes, per-config segment files and thresholds.

Wrappers are built in eval mode (export restores the training flag recursively).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_ee.errors import ExportValidationError
from edge_ee.segmentation.model import EarlyExitSegNet, upsample_logits
from edge_ee.segmentation.ort_runner import MANIFEST, PixelExitRunner
from edge_ee.segmentation.pixel_exit import check_thresholds, decide_exit, gathered_forward


class FirstSegment(nn.Module):
    """Stem + stage 0 (dense, all tokens) + exit 0 with baked thresholds."""

    def __init__(self, model: EarlyExitSegNet, thresholds: torch.Tensor) -> None:
        super().__init__()
        self.stem, self.blocks, self.head = model.stem, model.stages[0], model.exits[0]
        self.c = model.config.token_channels
        self.register_buffer("thresholds", thresholds.clone())

    def forward(self, image: torch.Tensor):
        x = self.stem(image)
        for blk in self.blocks:
            x = blk(x)
        logits = self.head(x.reshape(self.c, -1).t())
        return x, logits, decide_exit(logits, self.thresholds)


class TokenSegment(nn.Module):
    """Stage s ≥ 1 on gathered tokens: dense depthwise mix, MLP on `idx` only, scatter back."""

    def __init__(self, model: EarlyExitSegNet, stage: int,
                 thresholds: torch.Tensor | None) -> None:
        super().__init__()
        cfg = model.config
        self.blocks, self.head = model.stages[stage], model.exits[stage]
        self.c = cfg.token_channels
        self.h, self.w = cfg.token_hw
        self.last = thresholds is None
        self.register_buffer("thresholds", torch.zeros(cfg.num_classes) if thresholds is None
                             else thresholds.clone())

    def forward(self, x: torch.Tensor, idx: torch.Tensor):
        c, n = self.c, self.h * self.w
        gidx = idx[:, None].expand(-1, c)
        for blk in self.blocks:
            xt = x.reshape(c, n).t()
            d = blk.mix(x).reshape(c, n).t()
            upd = torch.gather(xt, 0, gidx) + blk.mlp(torch.gather(d, 0, gidx))
            x = xt.scatter(0, gidx, upd).t().reshape(1, c, self.h, self.w)
        logits = self.head(torch.gather(x.reshape(c, n).t(), 0, gidx))
        if self.last:
            mask = torch.ones_like(logits[:, 0], dtype=torch.bool)
        else:
            mask = decide_exit(logits, self.thresholds)
        return x, logits, mask


class FullNet(nn.Module):
    """No exits: stem → all stages → final head → upsample → argmax."""

    def __init__(self, model: EarlyExitSegNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.stem(image)
        for blocks in m.stages:
            for blk in blocks:
                x = blk(x)
        b, _, h, w = x.shape
        logits = m.exits[-1](x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)
        return upsample_logits(logits, m.config.image_hw).argmax(1)


class Assemble(nn.Module):
    def __init__(self, image_hw: tuple[int, int]) -> None:
        super().__init__()
        self.image_hw = image_hw

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return upsample_logits(logits, self.image_hw).argmax(1)


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str],
            output_names: list[str], dynamic_idx: bool) -> None:
    module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    dyn = {"x": None, "idx": {0: torch.export.Dim("m", min=1, max=10**6)}} if dynamic_idx \
        else None
    torch.onnx.export(module, args, str(path), input_names=input_names,
                      output_names=output_names, dynamo=True, external_data=False,
                      dynamic_shapes=dyn, optimize=True, verbose=False)


@dataclass(frozen=True)
class ExportReport:
    """Max |Δ logits| and exit-map agreement of onnxruntime vs torch per config."""

    max_abs_diff: dict[str, float]
    mask_agreement: dict[str, float]


def export_segments(model: EarlyExitSegNet, out_dir: str | Path,
                    configs: dict[str, np.ndarray], sample_images: np.ndarray,
                    atol: float = 1e-4, min_mask_agreement: float = 0.999) -> ExportReport:
    """Export `full`, `assemble` and one segment set per thresholds config, then validate.

    sample_images: normalised float32 (N,3,H,W) real images used for validation; raises
    `ExportValidationError` if logits differ by more than `atol` on tokens that exit at the
    same place in both, or fewer than `min_mask_agreement` of tokens exit at the same place.
    """
    model.eval()
    cfg = model.config
    root = Path(out_dir)
    img = torch.as_tensor(sample_images[:1])
    manifest: dict = {"token_hw": list(cfg.token_hw), "num_classes": cfg.num_classes,
                      "image_hw": list(cfg.image_hw), "full": "full.onnx",
                      "assemble": "assemble.onnx", "configs": {}}
    with torch.no_grad():
        _export(FullNet(model).eval(), (img,), root / "full.onnx", ["image"], ["prediction"],
                False)
        grid = torch.zeros(1, cfg.num_classes, *cfg.token_hw)
        _export(Assemble(cfg.image_hw).eval(), (grid,), root / "assemble.onnx", ["logits"],
                ["prediction"], False)
        x0 = model.stem(img)
        idx = torch.arange(0, cfg.token_hw[0] * cfg.token_hw[1], 3)
        for name, thr in configs.items():
            t = check_thresholds(thr, cfg.num_classes)
            files = [f"{name}/seg0.onnx"]
            _export(FirstSegment(model, t).eval(), (img,), root / files[0], ["image"],
                    ["x", "logits", "mask"], False)
            for s in range(1, cfg.num_exits):
                files.append(f"{name}/seg{s}.onnx")
                seg = TokenSegment(model, s, None if s == cfg.num_exits - 1 else t).eval()
                _export(seg, (x0, idx), root / files[-1], ["x", "idx"],
                        ["x_out", "logits", "mask"], True)
            manifest["configs"][name] = {"segments": files, "thresholds": t.tolist()}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return validate_export(model, root, configs, sample_images, atol, min_mask_agreement)


def validate_export(model: EarlyExitSegNet, out_dir: str | Path,
                    configs: dict[str, np.ndarray], sample_images: np.ndarray,
                    atol: float = 1e-4, min_mask_agreement: float = 0.999) -> ExportReport:
    """Compare onnxruntime segments with torch `gathered_forward` on real images."""
    diffs, agree = {}, {}
    for name, thr in configs.items():
        runner = PixelExitRunner(out_dir, name)
        worst, same, total = 0.0, 0, 0
        for i in range(len(sample_images)):
            img = np.ascontiguousarray(sample_images[i:i + 1], dtype=np.float32)
            ref = gathered_forward(model, torch.from_numpy(img), thr)
            got = runner.run(img)
            ref_e = ref.exit_index.reshape(-1).numpy()
            ref_l = ref.logits[0].reshape(model.config.num_classes, -1).t().numpy()
            eq = ref_e == got.exit_index
            same += int(eq.sum())
            total += eq.size
            worst = max(worst, float(np.abs(ref_l[eq] - got.token_logits[eq]).max()))
        diffs[name], agree[name] = worst, same / total
        if worst > atol or agree[name] < min_mask_agreement:
            raise ExportValidationError(
                f"ONNX config {name!r}: max |Δlogits| {worst:.2e} (atol {atol}), exit "
                f"agreement {agree[name]:.5f} (min {min_mask_agreement}); re-export in eval mode")
    return ExportReport(diffs, agree)
