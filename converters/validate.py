"""Numeric validation of exported segments against torch, on real samples.

Both chains run every sample through every segment (no early stop), the exported chain
feeding its own features forward, so errors that accumulate across segments show. An
export counts only when shapes match, float outputs agree within atol + rtol·|x|, and
predictions and exit decisions agree (decisions within 1e-4 of the threshold may flip).
How each output is compared is the segment spec's (`converters.spec.Compare`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from converters.errors import ExportValidationError
from converters.spec import Compare, SegmentSpec
from device_runners.backends import Backend


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-4
    rtol: float = 1e-3
    # confidences pass through exp/softmax of large scores: compared on their own scale,
    # and exit decisions within this band of the threshold may flip
    confidence_atol: float = 2e-3
    min_prediction_agreement: float = 1.0
    min_exit_agreement: float = 1.0
    # predictions may differ where torch's top-2 scores tie within tie_rtol·|top-1|
    # (float rounding in another runtime's GEMM, e.g. TFLite/XNNPACK); 0 = never
    tie_rtol: float = 0.0


@torch.no_grad()
def torch_outputs(specs: Sequence[SegmentSpec], x: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Every segment's outputs in torch, chaining features, for all samples (single-input
    segments: each takes the previous one's `passes_on` output)."""
    outs = []
    feat = torch.from_numpy(x)
    for spec in specs:
        res = spec.module(feat)
        outs.append({n: r.numpy() for n, r in zip(spec.output_names, res, strict=True)})
        if spec.passes_on is not None:
            feat = res[spec.output_names.index(spec.passes_on)]
    return outs


def decision_agreement(cmp: Compare, got: np.ndarray, want: np.ndarray,
                       ref: dict[str, np.ndarray], band: float, tie_rtol: float) -> np.ndarray:
    """Per sample: the decision agrees, or may flip (near its threshold, or a near tie)."""
    agree = got == want
    if cmp.near is not None and cmp.threshold is not None:
        agree |= np.abs(ref[cmp.near] - cmp.threshold) <= band
    if cmp.tie_scores is not None and tie_rtol > 0:
        agree |= _near_tie(cmp.tie_scores(ref), tie_rtol)
    return agree


def validate(specs: Sequence[SegmentSpec], backend: Backend, x: np.ndarray,
             tol: Tolerance = Tolerance(), batch_size: int = 64) -> dict:
    """Compare the exported chain with torch; raise ExportValidationError on disagreement."""
    ref_all = torch_outputs(specs, x)
    report = []
    feats = x
    for i, spec in enumerate(specs):
        got = _run_batched(backend, i, feats, batch_size)
        ref = ref_all[i]
        seg = {"segment": i}
        for name in spec.output_names:
            a, b = got[name], ref[name]
            cmp = spec.compare_of(name)
            if a.shape != b.shape:
                raise ExportValidationError(f"segment {i} output {name!r}: exported shape "
                                            f"{a.shape} vs torch {b.shape}")
            if cmp.kind == "decision":
                agree = decision_agreement(cmp, a, b, ref, tol.confidence_atol, tol.tie_rtol)
                rate = float(agree.mean())
                seg[f"{name}_agreement"] = rate
                need = tol.min_exit_agreement if name == "exit" else tol.min_prediction_agreement
                if rate < need:
                    raise ExportValidationError(
                        f"segment {i}: {name} agrees with torch on {rate:.2%} of samples (need "
                        f"{need:.2%}); the exported graph decides differently — check the ops")
            else:
                err = np.abs(a.astype(np.float64) - b)
                seg[f"{name}_max_abs_err"] = float(err.max()) if err.size else 0.0
                atol = tol.confidence_atol if cmp.kind == "confidence" else tol.atol
                if (err > atol + tol.rtol * np.abs(b)).any():
                    raise ExportValidationError(
                        f"segment {i}: {name} differs from torch by up to {err.max():.3g} "
                        f"(allowed {atol} + {tol.rtol}·|x|); export is not faithful")
        report.append(seg)
        if spec.passes_on is not None:
            feats = got[spec.passes_on]
    out = {"samples": len(x), "atol": tol.atol, "rtol": tol.rtol, "segments": report}
    if tol.tie_rtol:
        out["tie_rtol"] = tol.tie_rtol
    return out


def _near_tie(z: np.ndarray, rtol: float) -> np.ndarray:
    """Samples whose two best class scores in torch are equal up to float rounding."""
    top = np.sort(z, axis=1)[:, -2:]
    return (top[:, 1] - top[:, 0]) <= rtol * np.maximum(np.abs(top[:, 1]), 1.0)


def _run_batched(backend: Backend, i: int, x: np.ndarray, bs: int) -> dict[str, np.ndarray]:
    parts = [backend.run(i, x[s : s + bs]) for s in range(0, len(x), bs)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
