"""Write a language-model edge-ee bundle through the one bundle writer
(`converters.bundle.write_bundle`): per-segment decoding graphs with KV-cache state.

The task's part: one neutral `SegmentSpec` per segment (blocks [a, b) + exit head, or
the final head; dynamic rows P and past length T), the `BundleSpec` (`model.task =
"language-model"`, `granularity = "position"`, `classes` = the vocabulary pieces, input =
token ids), the `language_model` manifest section the device's `SequencePositions` reads
(context, kv_heads, head_dim, dim, exit policy, default new tokens), and the golden
arrays: real prompts and the tokens, exits and threshold margins that decoding produced
with torch's own segment modules driven by the device's executor loop (with exits and at
full depth). The check is the device's golden self-check (`device_runners.golden`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import edge_ee
from converters.bundle import write_bundle
from converters.spec import BundleSpec, DynamicAxis, SegmentSpec
from device_runners.backends import format_backends, open_backend
from device_runners.decode import POLICIES, TASK, decode
from device_runners.golden import self_check
from device_runners.manifest import Bundle
from edge_ee.errors import ExportValidationError
from edge_ee.lm.exit_init import check_exits
from edge_ee.lm.model import DecoderLM
from edge_ee.lm.segments import LMSegment, build_segments, example_feeds


@dataclass(frozen=True)
class LMBundleOptions:
    """Golden decoding length, the default generation length on the device, the exit
    policy the device uses by default (`calm` or `verify`, see `device_runners.decode`)."""

    golden_new_tokens: int = 16
    default_new_tokens: int = 64
    exit_policy: str = "calm"
    overwrite: bool = False


class TorchSegments:
    """The segment modules behind the backend interface (`run(index, feeds)`), so torch's
    reference decoding is the device's own executor loop."""

    name = "torch"
    file_format = "torch"

    def __init__(self, segments: list[LMSegment]) -> None:
        self.segments = segments

    @torch.no_grad()
    def run(self, graph: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seg = self.segments[graph]
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in seg.input_names()]
        outs = seg(*args)
        return {n: o.numpy() for n, o in zip(seg.output_names(), outs, strict=True)}


def _flops(seg: LMSegment) -> int:
    """FLOPs of one decoding step (one new row, empty past)."""
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        seg(*example_feeds(seg, past=0, p=1))
    return int(fc.get_total_flops())


def segment_spec(seg: LMSegment, threshold: float | None) -> SegmentSpec:
    """The neutral export spec of one LM segment (dynamic rows P and past length T)."""
    names = seg.input_names()
    c = seg.c
    rows, past = DynamicAxis("p", 1, c.seq_len), DynamicAxis("t", 0, c.seq_len)
    dyn = {names[0]: {1: rows}, **{n: {0: past} for n in names if n.startswith("past_")}}
    last = seg.is_last
    exit_desc = {"kind": "final" if last else "trained", "point": f"after block {seg.last}",
                 "threshold": threshold, "confidence": "max_softmax",
                 "outputs": {"token": "int64 (P,) every row's next token" if last else
                             "int64 (1,) the last row's next token",
                             "confidence": "float32, max softmax",
                             "exit": "bool, confidence > threshold"}}
    return SegmentSpec(
        module=seg, example=dict(zip(names, example_feeds(seg), strict=True)),
        input_names=tuple(names), output_names=tuple(seg.output_names()), flops=_flops(seg),
        params=sum(p.numel() for p in seg.parameters()), exit=exit_desc,
        stages=list(range(seg.first, seg.last)), dynamic_axes=dyn,
        passes_on=None if last else "h_out", name=f"blocks{seg.first}-{seg.last - 1}",
        manifest={"blocks": [seg.first, seg.last]})


def write_lm_bundle(model: DecoderLM, pieces: list[str], exits: tuple[int, ...],
                    heads: list[tuple[torch.Tensor, torch.Tensor]], thresholds: list[float],
                    out: str | Path, prompts: np.ndarray, name: str = "lm-ee",
                    extra: dict[str, Any] | None = None,
                    options: LMBundleOptions = LMBundleOptions()) -> Path:
    """Export, self-check and atomically place a bundle; `exits=()` gives the monolithic
    (one-segment, full-depth) bundle. prompts: int64 (N, L) real token ids (golden)."""
    c = model.config
    if exits:
        check_exits(model, exits)
    if len(pieces) != c.vocab_size:
        raise ExportValidationError(f"{len(pieces)} vocabulary pieces for a model with "
                                    f"{c.vocab_size} tokens; pass the model's own tokenizer")
    if options.exit_policy not in POLICIES:
        raise ExportValidationError(f"exit policy {options.exit_policy!r}; choose from {POLICIES}")
    model.eval()
    segs = build_segments(model, exits, heads, thresholds)
    specs = [segment_spec(s, None if s.is_last else float(thresholds[i])) for i, s in enumerate(segs)]
    section = {"context": c.seq_len, "kv_heads": c.n_kv_heads, "head_dim": c.head_dim,
               "dim": c.dim, "n_layers": c.n_layers, "exits_after_blocks": list(exits),
               "default_new_tokens": options.default_new_tokens,
               "exit_policy": options.exit_policy,
               "kv_fill": "rows of exited tokens ride along with the next call of a skipped "
                          "segment: copied states (calm) or processed in full (verify)"}
    prompts = np.asarray(prompts, np.int64)
    n_new = options.golden_new_tokens

    def golden(draft: Bundle, formats: tuple[str, ...]) -> tuple[dict, dict]:
        shell = Bundle(draft.root, {**draft.manifest, "language_model": section}, "")
        ref = TorchSegments(segs)
        g: dict[str, np.ndarray] = {
            "prompts": prompts,
            "input": np.concatenate((prompts, np.full((len(prompts), n_new), -1, np.int64)), 1)}
        for i, p in enumerate(prompts):
            for mode in (*POLICIES, "full"):
                d = decode(shell, ref, p, n_new, mode == "full",  # type: ignore[arg-type]
                           None if mode == "full" else mode)
                g[f"p{i}/{mode}/tokens"] = d.prediction
                g[f"p{i}/{mode}/exits"] = d.exit
                g[f"p{i}/{mode}/margin"] = d.extra["margin"]
        return g, {"new_tokens": n_new, "confidence_atol": 2e-3}

    def check(bundle: Bundle, fmt: str) -> tuple[dict, dict]:
        rec = self_check(bundle, open_backend(bundle, format_backends()[fmt]))
        return rec, {"against": "torch segment modules through the device's executor loop",
                     "prompts": len(prompts), "new_tokens": n_new}

    spec = BundleSpec(
        name=name, classes=tuple(pieces), task=TASK, granularity="position",
        input={"name": "tokens", "shape": [1, None], "dtype": "int64", "layout": "token ids",
               "normalisation": None},
        model={"variant": "early-exit" if exits else "monolithic",
               "architecture": c.to_dict(), **(extra or {})},
        provenance={"edge_ee_version": edge_ee.__version__})
    return write_bundle(specs, spec, out, golden=golden, check=check,
                        task_section={"language_model": section}, overwrite=options.overwrite)
