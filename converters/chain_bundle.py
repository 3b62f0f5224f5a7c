"""Bundles of sample-exit chains (classification): each segment takes the previous one's
feature, an exit flag decides per sample. The task hooks of `converters.bundle.write_bundle`.

Golden arrays: the golden inputs and torch's outputs of every segment (keys
`seg{i}/{output}`); formats other than ONNX fp32 add the outputs recorded with their own
runtime on the host under a prefix (`tflite/seg{i}/…`, `onnx-int8/seg{i}/…`) with their
own tolerances. The check: the device's golden self-check with the format's backend, then
validation of the whole chain against torch on real samples (`converters.validate`;
int8 chains with `converters.quantize.validate_int8`). int8 files come from
`converters.quantize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from converters.bundle import write_bundle
from converters.errors import ExportValidationError
from converters.formats import FORMATS, check_formats
from converters.ingraph import ingraph_section, write_candidate_probes
from converters.int8_thresholds import ThresholdHook, recalibrate
from converters.progress import progress
from converters.quantize import (
    QUANT_METHODS,
    Int8Tolerance,
    check_calibration,
    quantize_segment,
    validate_int8,
)
from converters.spec import BundleSpec, SegmentSpec
from converters.validate import Tolerance, torch_outputs, validate
from device_runners.backends import Backend, format_backends, open_backend
from device_runners.golden import self_check
from device_runners.manifest import Bundle
from device_runners.strategies import INGRAPH, available, self_check_ingraph

# TFLite fp32 (XNNPACK's GEMM sums in another order): exit scores are large and close, so
# an exact top-2 tie may pick the other class; such samples do not count as disagreement
TFLITE_TIE_RTOL = 1e-5


def write_chain_bundle(specs: Sequence[SegmentSpec], spec: BundleSpec, out_dir: str | Path,
                       validation_x: np.ndarray, golden_count: int = 8,
                       tol: Tolerance = Tolerance(), calibration: dict | None = None,
                       overwrite: bool = False, full_flops: int | None = None,
                       formats: Sequence[str] = ("onnx",), int8: bool = False,
                       calibration_x: np.ndarray | None = None, int8_heads: str = "auto",
                       int8_tol: Int8Tolerance = Int8Tolerance(),
                       extra_graphs: dict[str, SegmentSpec] | None = None,
                       task_section: dict[str, Any] | None = None,
                       int8_thresholds: ThresholdHook | None = None,
                       ingraph: bool = True) -> Path:
    """Export, validate and atomically place a sample-exit bundle at `out_dir`.

    `formats`: fp32 graph formats ("onnx", "tflite"), each validated against torch.
    `int8`: also write "<format>-int8" files for each, calibrated on `calibration_x`
    (real, normalised inputs, e.g. training images, not the validation samples).
    `extra_graphs` / `task_section`: graphs beside the chain (fp32 only, e.g. the candidate
    exits of `edge_ee.candidates`) and top-level manifest keys, passed to `write_bundle`.
    `int8_thresholds`: a hook that chooses each exit's threshold on the int8 chain's own
    scores (`converters.int8_thresholds`); None keeps the fp32 thresholds in int8 files.
    `ingraph`: also carry the exits as ONNX `If` in one graph (`converters.ingraph`, the
    manifest's `strategies`), validated against torch and the split.
    """
    formats = check_formats(list(formats))
    cx = check_calibration(calibration_x, spec.input_shape) if int8 else None
    if len(validation_x) < 1:
        raise ExportValidationError("validation needs at least one real sample")
    specs = list(specs)
    vx = validation_x
    gx = vx[:golden_count]

    def golden(draft: Bundle, all_formats: tuple[str, ...]) -> tuple[dict, dict]:
        arrays: dict[str, np.ndarray] = {"input": gx}
        for i, outs in enumerate(torch_outputs(specs, gx)):
            arrays.update({f"seg{i}/{k}": v for k, v in outs.items()})
        per_format = {}
        for fmt in all_formats:
            if fmt == "onnx":
                continue  # checked against torch's own outputs, the unprefixed keys
            backend = open_backend(draft, format_backends()[fmt])
            arrays.update(_chain(backend, len(specs), gx, f"{fmt}/"))
            per_format[fmt] = _golden_tol(fmt, tol, int8_tol)
        section = {"atol": tol.atol, "rtol": tol.rtol, "confidence_atol": tol.confidence_atol,
                   **({"formats": per_format} if per_format else {})}
        return arrays, section

    own: dict[str, dict[int, float]] = {}  # int8 format -> its own thresholds by segment

    def check(bundle: Bundle, fmt: str) -> tuple[dict, dict]:
        backend = open_backend(bundle, format_backends()[fmt])
        record = self_check(bundle, backend)
        if INGRAPH in available(bundle, backend):  # the device's check of the If graph
            record["ingraph"] = self_check_ingraph(bundle, backend)
        if fmt.endswith("-int8"):
            return record, validate_int8(specs, backend, vx, torch_outputs(specs, vx), int8_tol,
                                         thresholds=own.get(fmt))
        if fmt == "tflite":
            return record, validate(specs, backend, vx,
                                    replace(tol, tie_rtol=max(tol.tie_rtol, TFLITE_TIE_RTOL)))
        return record, validate(specs, backend, vx, tol)

    def quantize(tmp: Path, segments: list[dict[str, Any]]) -> dict[str, Any] | None:
        if cx is None:
            return None
        out = _quantize_all(tmp, specs, segments, formats, vx, cx, int8_heads)
        for fmt in formats if int8_thresholds is not None else ():
            rec = recalibrate(tmp, specs, segments, fmt, int8_thresholds)
            out["formats"][f"{fmt}-int8"]["thresholds"] = rec
            if "thresholds" in rec:
                own[f"{fmt}-int8"] = {int(i): (np.inf if t is None else t)
                                      for i, t in rec["thresholds"].items()}
        return out

    def strategies(tmp: Path, segments: list[dict[str, Any]]) -> dict[str, Any] | None:
        write_candidate_probes(tmp, task_section)  # a --candidates bundle's in-graph probes
        if not ingraph:
            return None
        return ingraph_section(tmp, specs, segments, vx, tol.confidence_atol, formats,
                               int8_confidence_atol=int8_tol.golden_confidence_atol)

    total = sum(int(s.flops) for s in specs)
    return write_bundle(specs, spec, out_dir, golden=golden, check=check, formats=formats,
                        cost={"total_flops_all_segments": total, "full_flops": full_flops or total},
                        calibration=calibration, quantize=quantize, overwrite=overwrite,
                        extra_graphs=extra_graphs, task_section=task_section,
                        strategies=strategies)


def _chain(backend: Backend, n_segments: int, x: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    """Every segment's outputs in one backend, feeding its own features forward."""
    res = {}
    for i in range(n_segments):
        out = backend.run(i, x)
        res.update({f"{prefix}seg{i}/{k}": v for k, v in out.items()})
        if "feature" in out:
            x = out["feature"]
    return res


def _golden_tol(fmt: str, tol: Tolerance, t8: Int8Tolerance) -> dict[str, Any]:
    """Golden outputs of `fmt` were recorded with the same runtime on the host."""
    if fmt.endswith("-int8"):
        return {"prefix": f"{fmt}/", "atol": t8.golden_atol, "rtol": t8.golden_rtol,
                "confidence_atol": t8.golden_confidence_atol}
    return {"prefix": f"{fmt}/", "atol": tol.atol, "rtol": tol.rtol,
            "confidence_atol": tol.confidence_atol}


def _quantize_all(tmp: Path, specs: Sequence[SegmentSpec], segments: list[dict[str, Any]],
                  formats: tuple[str, ...], vx: np.ndarray, cx: np.ndarray,
                  heads: str) -> dict[str, Any]:
    """int8 files of every segment in every format; the manifest's `quantization` section."""
    ref, cal = torch_outputs(specs, vx), torch_outputs(specs, cx)
    out: dict[str, Any] = {"calibration_samples": len(cx), "decision_samples": len(vx),
                           "heads_policy": heads, "formats": {}}
    for fmt in formats:
        ext = FORMATS[fmt].ext
        recs = []
        for i, seg in enumerate(progress(specs, desc=f"int8 {fmt}", unit="segment")):
            cin = cx if i == 0 else cal[i - 1]["feature"]
            vin = vx if i == 0 else ref[i - 1]["feature"]
            name = f"seg{i}.int8.{ext}"
            rec = quantize_segment(fmt, seg, tmp / segments[i]["files"][fmt], tmp / name, cin,
                                   vin, ref[i], heads)
            segments[i]["files"][f"{fmt}-int8"] = name
            recs.append({"segment": i, **rec})
        out["formats"][f"{fmt}-int8"] = {**QUANT_METHODS[fmt], "segments": recs}
    return out
