"""Write an exit-split bundle: segment graphs, golden I/O, manifest with sha256 of every file.

Everything is written into a temporary folder beside the target, checked with the same
runtime code the device uses (load with checksums, golden self-check, validation against
torch on real samples), and only then renamed into place. A failed export leaves
nothing behind.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import edge_ee
from converters.onnx_export import export_onnx
from converters.segments import SegmentPlan
from converters.validate import Tolerance, torch_outputs, validate
from device_runners.backends import open_backend
from device_runners.manifest import (
    BUNDLE_SCHEMA_VERSION,
    MANIFEST,
    load_bundle,
    sha256_file,
    validate_manifest,
)
from device_runners.results import atomic_write_json
from device_runners.runner import self_check
from edge_ee.cost import count_flops
from edge_ee.errors import BundleError, ExportValidationError, SelfCheckError


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
                 overwrite: bool = False, full_flops: int | None = None) -> Path:
    """Export, validate and atomically place a bundle at `out_dir`; returns its path."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise BundleError(f"{out} exists; pass --overwrite (overwrite=True) or choose another folder")
    if len(validation_x) < 1:
        raise ExportValidationError("validation needs at least one real sample")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write_into(tmp, plans, spec, validation_x, golden_count, tol, calibration, full_flops)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_into(tmp: Path, plans: Sequence[SegmentPlan], spec: BundleSpec, vx: np.ndarray,
                golden_count: int, tol: Tolerance, calibration: dict | None,
                full_flops: int | None) -> None:
    example = torch.from_numpy(vx[:1])
    segments = []
    feat = example
    for i, plan in enumerate(plans):
        export_onnx(plan.module, feat, tmp / f"seg{i}.onnx", plan.output_names)
        segments.append(_segment_entry(i, plan, feat))
        if plan.head is not None:
            with torch.no_grad():
                feat = plan.module(feat)[0]
    gx = vx[:golden_count]
    golden = {"input": gx}
    for i, outs in enumerate(torch_outputs(plans, gx)):
        golden.update({f"seg{i}/{k}": v for k, v in outs.items()})
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
                   "confidence_atol": tol.confidence_atol},
        "preferred_format": "onnx",
        "provenance": {
            "edge_ee_version": edge_ee.__version__, "torch_version": torch.__version__,
            "onnx_version": onnx.__version__, "onnx_opset": 20,
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "files": files,
        **spec.extra,
    }
    validate_manifest(manifest)
    atomic_write_json(tmp / MANIFEST, manifest)
    bundle = load_bundle(tmp)
    backend = open_backend(bundle, "onnxruntime")
    try:
        manifest["self_check"] = self_check(bundle, backend)
    except SelfCheckError as err:
        raise ExportValidationError(f"golden self-check failed at export: {err}") from err
    manifest["validation"] = validate(plans, backend, vx, tol)
    atomic_write_json(tmp / MANIFEST, manifest)


def read_manifest(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / MANIFEST).read_text())
