"""Write an exit-split bundle: segment graphs, golden I/O, manifest with sha256 of every file.

Everything is written into a temporary folder beside the target, checked with the same
runtime code the device uses (load with checksums, golden self-check, validation against
torch on real samples), and only then renamed into place. A failed export leaves
nothing behind.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import edge_ee
from converters.atomic import atomic_dir
from converters.onnx_export import export_onnx
from converters.quantize import (
    QUANT_METHODS,
    Int8Tolerance,
    check_calibration,
    quantize_segment,
    validate_int8,
)
from converters.segments import SegmentPlan
from converters.validate import Tolerance, torch_outputs, validate
from device_runners.backends import Backend, format_backends, open_backend
from device_runners.golden import self_check
from device_runners.manifest import (
    BUNDLE_SCHEMA_VERSION,
    MANIFEST,
    Bundle,
    load_bundle,
    sha256_file,
    validate_manifest,
)
from device_runners.results import atomic_write_json
from edge_ee.cost import count_flops
from edge_ee.errors import BundleError, ConfigError, ExportValidationError, SelfCheckError

FORMATS = ("onnx", "tflite")  # fp32 formats; int8=True adds "<format>-int8" for each
EXT = {"onnx": "onnx", "tflite": "tflite"}
# TFLite fp32 (XNNPACK's GEMM sums in another order): exit scores are large and close, so
# an exact top-2 tie may pick the other class; such samples do not count as disagreement
TFLITE_TIE_RTOL = 1e-5


@dataclass(frozen=True)
class BundleSpec:
    """What the manifest says about the model beyond its segments."""

    name: str
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]  # without batch, e.g. (3, 32, 32)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    source_sha256: str | None = None
    task: str = "classification"
    granularity: str = "sample"
    extra: dict[str, Any] = field(default_factory=dict)

    def input_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": "x", "shape": [None, *self.input_shape],
                                "dtype": "float32", "layout": "NCHW"}
        if self.mean:
            c, h, w = self.input_shape
            spec["raw"] = {"dtype": "uint8", "shape": [None, h, w, c], "layout": "NHWC",
                           "scale": 1.0 / 255.0, "mean": list(self.mean), "std": list(self.std)}
        return spec


def _segment_entry(i: int, plan: SegmentPlan, example: torch.Tensor) -> dict[str, Any]:
    head = plan.head
    flops = count_flops(plan.module, example)
    if head is not None:
        with torch.no_grad():
            feat = plan.module.stages(example)
        flops += head.extra_flops(tuple(feat.shape[1:]))
        exit_info: dict[str, Any] = {
            "kind": head.scorer.kind if head.scorer.kind != "linear" else "lda",
            "point": plan.stage_names[-1], "exit_index": plan.exit_index,
            "confidence": head.confidence_name, "threshold": float(head.threshold),
            "outputs": {"prediction": "int64 class index", "confidence": "float32",
                        "exit": "bool: confidence > threshold"},
        }
    else:
        exit_info = {"kind": "final", "point": "classifier", "threshold": None,
                     "outputs": {"prediction": "int64", "confidence": "max softmax",
                                 "logits": "float32"}}
    params = sum(p.numel() for p in plan.module.parameters())
    params += sum(b.numel() for n, b in plan.module.named_buffers() if "head" in n)
    return {"index": i, "name": f"seg{i}", "stages": plan.stage_names,
            "files": {"onnx": f"seg{i}.onnx"}, "inputs": ["x"],
            "outputs": list(plan.output_names), "flops": int(flops), "params": int(params),
            "exit": exit_info}


def write_bundle(plans: Sequence[SegmentPlan], spec: BundleSpec, out_dir: str | Path,
                 validation_x: np.ndarray, golden_count: int = 8,
                 tol: Tolerance = Tolerance(), calibration: dict | None = None,
                 overwrite: bool = False, full_flops: int | None = None,
                 formats: Sequence[str] = ("onnx",), int8: bool = False,
                 calibration_x: np.ndarray | None = None, int8_heads: str = "auto",
                 int8_tol: Int8Tolerance = Int8Tolerance()) -> Path:
    """Export, validate and atomically place a bundle at `out_dir`; returns its path.

    `formats`: fp32 graph formats ("onnx", "tflite"), each validated against torch.
    `int8`: also write "<format>-int8" files for each, calibrated on `calibration_x`
    (real, normalised inputs, e.g. training images, not the validation samples).
    """
    out = Path(out_dir)
    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"unknown export formats {bad or formats}; choose from {list(FORMATS)}")
    cx = check_calibration(calibration_x, spec.input_shape) if int8 else None
    if out.exists() and not overwrite:
        raise BundleError(f"{out} exists; pass --overwrite (overwrite=True) or choose another folder")
    if len(validation_x) < 1:
        raise ExportValidationError("validation needs at least one real sample")
    with atomic_dir(out) as tmp:
        _write_into(tmp, plans, spec, validation_x, golden_count, tol, calibration, full_flops,
                    formats, cx, int8_heads, int8_tol)
    return out


def _write_into(tmp: Path, plans: Sequence[SegmentPlan], spec: BundleSpec, vx: np.ndarray,
                golden_count: int, tol: Tolerance, calibration: dict | None,
                full_flops: int | None, formats: tuple[str, ...] = ("onnx",),
                cx: np.ndarray | None = None, int8_heads: str = "auto",
                int8_tol: Int8Tolerance = Int8Tolerance()) -> None:
    example = torch.from_numpy(vx[:1])
    segments = []
    feat = example
    for i, plan in enumerate(plans):
        if "onnx" in formats:
            export_onnx(plan.module, feat, tmp / f"seg{i}.onnx", plan.output_names)
        if "tflite" in formats:
            from converters.tflite_export import export_tflite
            export_tflite(plan.module, feat, tmp / f"seg{i}.tflite")
        segments.append(_segment_entry(i, plan, feat))
        segments[-1]["files"] = {f: f"seg{i}.{EXT[f]}" for f in formats}
        if plan.head is not None:
            with torch.no_grad():
                feat = plan.module(feat)[0]
    quantization = None if cx is None else _quantize_all(tmp, plans, segments, formats, vx, cx,
                                                         int8_heads)
    all_formats = [*formats, *(f"{f}-int8" for f in formats if cx is not None)]
    gx = vx[:golden_count]
    golden = {"input": gx}
    for i, outs in enumerate(torch_outputs(plans, gx)):
        golden.update({f"seg{i}/{k}": v for k, v in outs.items()})
    golden_formats = {}
    draft = Bundle(tmp, {"segments": segments}, "")
    for fmt in all_formats:
        if fmt == "onnx":
            continue  # checked against torch's own outputs, the unprefixed keys
        golden.update(_chain(open_backend(draft, format_backends()[fmt]), len(plans), gx, f"{fmt}/"))
        golden_formats[fmt] = _golden_tol(fmt, tol, int8_tol)
    with open(tmp / "golden.npz", "wb") as f:
        np.savez(f, **golden)
    files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.name != MANIFEST}
    manifest = {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "kind": "edge-ee-bundle",
        "model": {"name": spec.name, "task": spec.task, "granularity": spec.granularity,
                  "source_sha256": spec.source_sha256},
        "input": spec.input_spec(),
        "classes": list(spec.classes),
        "segments": segments,
        "cost": {"total_flops_all_segments": sum(s["flops"] for s in segments),
                 "full_flops": full_flops or sum(s["flops"] for s in segments)},
        "calibration": calibration,
        "golden": {"file": "golden.npz", "count": len(gx), "atol": tol.atol, "rtol": tol.rtol,
                   "confidence_atol": tol.confidence_atol,
                   **({"formats": golden_formats} if golden_formats else {})},
        "preferred_format": formats[0],
        "provenance": {
            "edge_ee_version": edge_ee.__version__, "torch_version": torch.__version__,
            "onnx_version": onnx.__version__, "onnx_opset": 20, **_tool_versions(all_formats),
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "files": files,
        **({"quantization": quantization} if quantization else {}),
        **spec.extra,
    }
    validate_manifest(manifest)
    atomic_write_json(tmp / MANIFEST, manifest)
    bundle = load_bundle(tmp)
    checks, reports = {}, {}
    for fmt in all_formats:
        backend = open_backend(bundle, format_backends()[fmt])
        try:
            checks[fmt] = self_check(bundle, backend)
        except SelfCheckError as err:
            raise ExportValidationError(f"golden self-check ({fmt}) failed at export: {err}") from err
        if fmt.endswith("-int8"):
            reports[fmt] = validate_int8(plans, backend, vx, torch_outputs(plans, vx), int8_tol)
        elif fmt == "tflite":
            reports[fmt] = validate(plans, backend, vx,
                                    replace(tol, tie_rtol=max(tol.tie_rtol, TFLITE_TIE_RTOL)))
        else:
            reports[fmt] = validate(plans, backend, vx, tol)
    manifest["self_check"] = checks[formats[0]]
    manifest["validation"] = reports[formats[0]]
    if len(all_formats) > 1:
        manifest["self_check_formats"] = checks
        manifest["validation_formats"] = reports
    atomic_write_json(tmp / MANIFEST, manifest)


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


def _quantize_all(tmp: Path, plans: Sequence[SegmentPlan], segments: list[dict[str, Any]],
                  formats: tuple[str, ...], vx: np.ndarray, cx: np.ndarray,
                  heads: str) -> dict[str, Any]:
    """int8 files of every segment in every format; the manifest's `quantization` section."""
    ref, cal = torch_outputs(plans, vx), torch_outputs(plans, cx)
    out: dict[str, Any] = {"calibration_samples": len(cx), "decision_samples": len(vx),
                           "heads_policy": heads, "formats": {}}
    for fmt in formats:
        recs = []
        for i, plan in enumerate(plans):
            cin = cx if i == 0 else cal[i - 1]["feature"]
            vin = vx if i == 0 else ref[i - 1]["feature"]
            name = f"seg{i}.int8.{EXT[fmt]}"
            rec = quantize_segment(fmt, plan, tmp / f"seg{i}.{EXT[fmt]}", tmp / name, cin, vin,
                                   ref[i], heads)
            segments[i]["files"][f"{fmt}-int8"] = name
            recs.append({"segment": i, **rec})
        out["formats"][f"{fmt}-int8"] = {**QUANT_METHODS[fmt], "segments": recs}
    return out


def _tool_versions(formats: Sequence[str]) -> dict[str, str]:
    from importlib import metadata
    dists = ["onnxruntime"] + (["litert-torch", "ai-edge-litert", "torchao"]
                               if any(f.startswith("tflite") for f in formats) else [])
    vers = {}
    for d in dists:
        try:
            vers[d.replace("-", "_") + "_version"] = metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return vers


def read_manifest(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / MANIFEST).read_text())
