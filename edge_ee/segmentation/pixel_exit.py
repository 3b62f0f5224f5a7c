"""Pixel-level early exit (ADP-C style) on the token grid: dense-masked and gathered runs.

A token whose exit probabilities pass the thresholds (`decide_exit`: OR over classes of
φ_k ≥ T_k; a single threshold t is the vector filled with t, equivalent to max φ ≥ t)
stops: its logits at that exit are final. Filling rule for the following layers: a
stopped token keeps its last feature (no Gaussian interpolation as in ADP-C) — the
position-wise MLPs no longer touch it, and the dense depthwise `mix` of later blocks
reads that frozen feature as the neighbour value.

`dense_masked_forward` computes every token and selects with the masks (the reference);
`gathered_forward` gathers the remaining tokens into a flat index, runs the MLPs and exit
heads on them only, and scatters back (the real saving). Both return a `PixelExitResult`.
`CostModel` counts FLOPs with `torch.utils.flop_counter.FlopCounterMode`: the stem and
each stage's depthwise mixes are dense (paid once if the stage runs at all), each MLP and
exit head is paid per remaining token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from edge_ee.segmentation.errors import SegmentationError
from edge_ee.segmentation.model import EarlyExitSegNet, check_image_tensor, upsample_logits
from edge_ee.unit_cost import reach_from_exits, unit_flops


@dataclass(frozen=True)
class PixelExitResult:
    """Token-level outcome: final logits (B,K,h,w) and the exit each token took (B,h,w)."""

    logits: torch.Tensor
    exit_index: torch.Tensor

    def full_res_prediction(self, image_hw: tuple[int, int]) -> torch.Tensor:
        """(B,H,W) int64 class map: bilinear upsampling of the assembled token logits."""
        return upsample_logits(self.logits, image_hw).argmax(1)


def check_thresholds(thresholds: torch.Tensor | np.ndarray, num_classes: int) -> torch.Tensor:
    """Thresholds as a float32 (K,) tensor with values in (0, 1]; else `SegmentationError`."""
    t = torch.as_tensor(np.asarray(thresholds, dtype=np.float32))
    if t.shape != (num_classes,):
        raise SegmentationError(f"need one threshold per class ({num_classes},), got "
                                f"{tuple(t.shape)}")
    if not torch.all((t > 0) & (t <= 1)):
        raise SegmentationError(f"thresholds must lie in (0, 1], got {t.tolist()}")
    return t


def decide_exit(logits: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """logits (..., K) → bool (...): OR_k(softmax_k ≥ T_k)."""
    return (torch.softmax(logits, dim=-1) >= thresholds).any(dim=-1)


@torch.no_grad()
def dense_masked_forward(model: EarlyExitSegNet, images: torch.Tensor,
                         thresholds: torch.Tensor | np.ndarray | None) -> PixelExitResult:
    """Reference: compute all tokens at every layer, keep updates only where still active.

    `thresholds=None` disables the early exits (every token runs to the final exit).
    """
    cfg = model.config
    check_image_tensor(images, cfg.image_hw)
    thr = None if thresholds is None else check_thresholds(thresholds, cfg.num_classes)
    x = model.stem(images)
    b, c, h, w = x.shape
    done = torch.zeros(b, h * w, dtype=torch.bool)
    final = torch.zeros(b, h * w, cfg.num_classes)
    exit_index = torch.full((b, h * w), -1, dtype=torch.int64)
    last = cfg.num_exits - 1
    for s, (blocks, head) in enumerate(zip(model.stages, model.exits, strict=True)):
        active = ~done
        for blk in blocks:
            xt = x.flatten(2).transpose(1, 2)
            upd = xt + blk.mlp(blk.mix(x).flatten(2).transpose(1, 2))
            xt = torch.where(active[..., None], upd, xt)
            x = xt.transpose(1, 2).reshape(b, c, h, w)
        logits = head(x.flatten(2).transpose(1, 2))
        if s == last:
            stop = active
        elif thr is None:
            stop = torch.zeros_like(active)
        else:
            stop = active & decide_exit(logits, thr)
        final = torch.where(stop[..., None], logits, final)
        exit_index = torch.where(stop, torch.full_like(exit_index, s), exit_index)
        done = done | stop
    return PixelExitResult(final.transpose(1, 2).reshape(b, cfg.num_classes, h, w),
                           exit_index.reshape(b, h, w))


@torch.no_grad()
def gathered_forward(model: EarlyExitSegNet, images: torch.Tensor,
                     thresholds: torch.Tensor | np.ndarray | None) -> PixelExitResult:
    """Per image: run MLPs/exit heads only on the remaining tokens (flat index), scatter back."""
    cfg = model.config
    check_image_tensor(images, cfg.image_hw)
    thr = None if thresholds is None else check_thresholds(thresholds, cfg.num_classes)
    outs_l, outs_e = [], []
    for i in range(images.shape[0]):
        x = model.stem(images[i:i + 1])
        _, c, h, w = x.shape
        idx = torch.arange(h * w)
        final = torch.zeros(h * w, cfg.num_classes)
        exit_index = torch.full((h * w,), -1, dtype=torch.int64)
        for s, (blocks, head) in enumerate(zip(model.stages, model.exits, strict=True)):
            for blk in blocks:
                xt = x.reshape(c, h * w).t()
                d = blk.mix(x).reshape(c, h * w).t()
                xt = xt.index_copy(0, idx, xt[idx] + blk.mlp(d[idx]))
                x = xt.t().reshape(1, c, h, w)
            logits = head(x.reshape(c, h * w).t()[idx])
            if s == cfg.num_exits - 1 or thr is None:
                stop = torch.full((idx.numel(),), s == cfg.num_exits - 1)
            else:
                stop = decide_exit(logits, thr)
            final[idx[stop]] = logits[stop]
            exit_index[idx[stop]] = s
            idx = idx[~stop]
            if idx.numel() == 0:
                break
        outs_l.append(final.t().reshape(cfg.num_classes, h, w))
        outs_e.append(exit_index.reshape(h, w))
    return PixelExitResult(torch.stack(outs_l), torch.stack(outs_e))


def _flops(fn, *args) -> int:
    with FlopCounterMode(display=False) as fc:
        fn(*args)
    return int(fc.get_total_flops())


@dataclass(frozen=True)
class CostModel:
    """FLOPs of the stem, of each stage's dense mixes, and per remaining token per stage."""

    stem_flops: int
    dense_flops: tuple[int, ...]       # per stage: depthwise mixes over the whole grid
    per_token_flops: tuple[int, ...]   # per stage: MLPs + exit head for one token
    num_tokens: int

    @classmethod
    @torch.no_grad()
    def of(cls, model: EarlyExitSegNet) -> CostModel:
        model.eval()
        cfg = model.config
        img = torch.zeros(1, 3, *cfg.image_hw)
        stem = _flops(model.stem, img)
        x = model.stem(img)
        tok = torch.zeros(1, cfg.token_channels)
        dense, per_tok = [], []
        for blocks, head in zip(model.stages, model.exits, strict=True):
            dense.append(sum(_flops(blk.mix, x) for blk in blocks))
            per_tok.append(sum(_flops(blk.mlp, tok) for blk in blocks) + _flops(head, tok))
        return cls(stem, tuple(dense), tuple(per_tok), x.shape[2] * x.shape[3])

    def flops(self, exit_index: np.ndarray | torch.Tensor) -> np.ndarray:
        """FLOPs per image (B,) given each token's exit (B,h,w): only remaining tokens pay."""
        reach = reach_from_exits(np.asarray(exit_index), len(self.dense_flops))
        return unit_flops(reach, self.stem_flops, self.dense_flops, self.per_token_flops)

    def full_flops(self) -> float:
        """FLOPs per image with no early exit."""
        return float(self.flops(np.full((1, self.num_tokens), len(self.dense_flops) - 1))[0])
