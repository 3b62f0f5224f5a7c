"""ONNX graphs of the pixel-exit network, per-class thresholds baked in as constants.

Graphs (batch B images; `bundle.py` describes them as segment specs, which
`converters.bundle.write_bundle` exports through the format registry and validates).
Tokens of a batch are numbered flat, image-major: token t of image b is row b*h*w + t.
* `FirstSegment`: image (B,3,H,W) → feature grid (B,C,h,w), token logits (B*h*w,K),
  exit_mask (B*h*w,) bool — stem, stage 0 and exit 0;
* `TokenSegment` s ≥ 1: (feature grid (B,C,h,w), idx (M,) int64 running tokens, flat;
  pos (B,h*w) int64: 1 + each token's position in idx, 0 when it is not running)
  → (updated grid, logits (M,K), exit_mask (M,)); M is a dynamic dimension. The
  depthwise `mix` runs on the whole grid; the MLPs and the exit head run on the `idx`
  rows only (`Gather` in). The way back is a second gather, not a scatter: the MLP
  updates get a zero row in front and every token adds row `pos` of them (0 for a
  stopped token: its feature stays exactly as it was). TFLite has no fast scatter
  (litert-torch lowers `index_copy` to STABLEHLO_SCATTER: 10-20x slower than the whole
  ONNX segment); the gather form is as fast in onnxruntime and bit-identical. The last
  segment's mask is all true. Gathers read a table with one extra zero row, index
  B*h*w: an `idx` padded with that value to a fixed length computes the real rows
  unchanged (no `pos` points at a padded row). TFLite, whose converter cannot lower a
  dynamic M, carries one signature per fixed length (`converters.spec.Padding`).
* `Assemble`: token logits (B,K,h,w) → bilinear upsample → class map (B,H,W) int64;
* `FullNet`: the monolithic no-exit network, image → class map (B,H,W).

A token covers a 4x4 patch of pixels: its exit mask is the per-pixel mask of that patch.
Wrappers are built in eval mode (export restores the training flag recursively).
"""

from __future__ import annotations

import torch
from torch import nn

from edge_ee.segmentation.model import EarlyExitSegNet, upsample_logits
from edge_ee.segmentation.pixel_exit import decide_exit

SEG0_INPUTS = ["image"]
SEG_INPUTS = ["feature_in", "idx", "pos"]
SEG_OUTPUTS = ["feature", "logits", "exit_mask"]


class FirstSegment(nn.Module):
    """Stem + stage 0 (dense, all tokens) + exit 0 with baked thresholds."""

    def __init__(self, model: EarlyExitSegNet, thresholds: torch.Tensor | None) -> None:
        super().__init__()
        self.stem, self.blocks, self.head = model.stem, model.stages[0], model.exits[0]
        self.c = model.config.token_channels
        self.last = thresholds is None
        self.register_buffer("thresholds", torch.ones(model.config.num_classes)
                             if thresholds is None else thresholds.clone())

    def forward(self, image: torch.Tensor):
        x = self.stem(image)
        for blk in self.blocks:
            x = blk(x)
        logits = self.head(x.flatten(2).transpose(1, 2).reshape(-1, self.c))
        mask = torch.ones_like(logits[:, 0], dtype=torch.bool) if self.last \
            else decide_exit(logits, self.thresholds)
        return x, logits, mask


class TokenSegment(nn.Module):
    """Stage s ≥ 1 on gathered tokens: dense depthwise mix, MLP on `idx` rows, scatter back."""

    def __init__(self, model: EarlyExitSegNet, stage: int,
                 thresholds: torch.Tensor | None) -> None:
        super().__init__()
        cfg = model.config
        self.blocks, self.head = model.stages[stage], model.exits[stage]
        self.c = cfg.token_channels
        self.h, self.w = cfg.token_hw
        self.last = thresholds is None
        self.register_buffer("thresholds", torch.ones(cfg.num_classes) if thresholds is None
                             else thresholds.clone())

    def forward(self, x: torch.Tensor, idx: torch.Tensor, pos: torch.Tensor):
        c, n, h, w = self.c, self.h * self.w, self.h, self.w
        zero = torch.zeros(1, c, dtype=x.dtype)  # row B*n (padded idx) / row 0 (not running)
        at = pos.reshape(-1)
        xt = x.flatten(2).transpose(1, 2).reshape(-1, c)
        for blk in self.blocks:
            grid = xt.reshape(-1, n, c).transpose(1, 2).reshape(-1, c, h, w)
            d = torch.cat([blk.mix(grid).flatten(2).transpose(1, 2).reshape(-1, c), zero])
            delta = torch.cat([zero, blk.mlp(torch.index_select(d, 0, idx))])
            xt = xt + torch.index_select(delta, 0, at)
        logits = self.head(torch.index_select(torch.cat([xt, zero]), 0, idx))
        mask = torch.ones_like(logits[:, 0], dtype=torch.bool) if self.last \
            else decide_exit(logits, self.thresholds)
        return xt.reshape(-1, n, c).transpose(1, 2).reshape(-1, c, h, w), logits, mask


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
    """Token logits (B,K,h,w) → full-resolution class map (B,H,W)."""

    def __init__(self, image_hw: tuple[int, int]) -> None:
        super().__init__()
        self.image_hw = image_hw

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return upsample_logits(logits, self.image_hw).argmax(1)


def segment_modules(model: EarlyExitSegNet, thresholds: torch.Tensor) -> list[nn.Module]:
    """One eval-mode wrapper per exit; the last one's mask is all true."""
    last = model.config.num_exits - 1
    mods: list[nn.Module] = [FirstSegment(model, thresholds if last > 0 else None)]
    mods += [TokenSegment(model, s, None if s == last else thresholds) for s in range(1, last + 1)]
    return [m.eval() for m in mods]
