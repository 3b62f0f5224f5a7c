"""The one bundle writer: specs + a task section → a verified bundle folder, all or nothing.

`write_bundle` does, once for every task: a temporary folder beside the target, export of
every segment spec and extra graph (e.g. segmentation's `assemble`) through the format
registry, optional int8 files (a task hook), the golden arrays the task computes, the
sha256 of every file, manifest assembly and its structural validation, then per format
the device's golden self-check and the task's validation against torch (the `check`
hook), and the atomic rename. A failure anywhere leaves nothing behind.

The task supplies what differs: the golden arrays (and their manifest section), its
manifest section (e.g. `segmentation: {...}`), the check. Sample-exit chains
(classification) get theirs from `converters.chain_bundle`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters import formats as fmts
from converters.atomic import atomic_dir
from converters.errors import ExportValidationError
from converters.progress import progress
from converters.spec import BundleSpec, SegmentSpec
from device_runners.errors import BundleError, SelfCheckError
from device_runners.files import atomic_save_npz, atomic_write_json
from device_runners.manifest import (
    BUNDLE_SCHEMA_VERSION,
    MANIFEST,
    Bundle,
    load_bundle,
    sha256_file,
    validate_manifest,
)

GOLDEN_FILE = "golden.npz"
# golden(draft bundle with every graph written, all formats) -> (arrays, manifest section)
GoldenFn = Callable[[Bundle, tuple[str, ...]], tuple[Mapping[str, np.ndarray], Mapping[str, Any]]]
# check(verified bundle, format) -> (self-check record, validation record); raises on failure
CheckFn = Callable[[Bundle, str], tuple[dict[str, Any], dict[str, Any]]]
# quantize(folder, segment entries) -> the manifest's `quantization` section (adds files)
QuantizeFn = Callable[[Path, list[dict[str, Any]]], dict[str, Any] | None]
# strategies(folder, segment entries) -> the manifest's `strategies` section (adds files,
# e.g. the in-graph-exit graph, validated before it counts)
StrategiesFn = Callable[[Path, list[dict[str, Any]]], dict[str, Any] | None]


def write_bundle(specs: Sequence[SegmentSpec], spec: BundleSpec, out_dir: str | Path, *,
                 golden: GoldenFn, check: CheckFn, formats: Sequence[str] = ("onnx",),
                 task_section: Mapping[str, Any] | None = None,
                 extra_graphs: Mapping[str, SegmentSpec] | None = None,
                 cost: Mapping[str, Any] | None = None, calibration: Any = None,
                 quantize: QuantizeFn | None = None, overwrite: bool = False,
                 strategies: StrategiesFn | None = None) -> Path:
    """Export, check and atomically place a bundle at `out_dir`; returns its path.

    `task_section`: top-level manifest keys of the task (e.g. {"segmentation": {...}});
    `extra_graphs`: graphs beside the segments by name, listed under the manifest's
    `graphs`; `cost`: the manifest's cost section (default: the segments' FLOPs summed)."""
    out = Path(out_dir)
    formats = fmts.check_formats(list(formats))
    if out.exists() and not overwrite:
        raise BundleError(f"{out} exists; pass --overwrite (overwrite=True) or choose another folder")
    if not specs:
        raise ExportValidationError("a bundle needs at least one segment")
    with atomic_dir(out) as tmp:
        _write_into(tmp, list(specs), spec, golden, check, formats, dict(task_section or {}),
                    dict(extra_graphs or {}), cost, calibration, quantize, strategies)
    return out


def segment_entry(i: int, seg: SegmentSpec, files: dict[str, str]) -> dict[str, Any]:
    """The manifest entry of segment `i`."""
    return {"index": i, "name": seg.name or f"seg{i}", "stages": list(seg.stages),
            "files": files, "inputs": list(seg.input_names), "outputs": list(seg.output_names),
            "flops": int(seg.flops), "params": int(seg.params), "exit": seg.exit,
            **({"padding": seg.padding.to_manifest()} if seg.padding is not None else {}),
            **seg.manifest}


def _export_all(tmp: Path, specs: list[SegmentSpec], extra: dict[str, SegmentSpec],
                formats: tuple[str, ...]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    segments = []
    for i, seg in enumerate(progress(specs, desc=f"export {'+'.join(formats)}", unit="segment")):
        stem = seg.name or f"seg{i}"
        files = {f: fmts.export(f, seg, tmp, stem) for f in formats}
        segments.append(segment_entry(i, seg, files))
    graphs = {name: {"files": {f: fmts.export(f, g, tmp, name) for f in formats},
                     "inputs": list(g.input_names), "outputs": list(g.output_names),
                     **({"padding": g.padding.to_manifest()} if g.padding is not None else {})}
              for name, g in extra.items()}
    return segments, graphs


def _write_into(tmp: Path, specs: list[SegmentSpec], spec: BundleSpec, golden: GoldenFn,
                check: CheckFn, formats: tuple[str, ...], task_section: dict[str, Any],
                extra: dict[str, SegmentSpec], cost: Mapping[str, Any] | None,
                calibration: Any, quantize: QuantizeFn | None,
                strategies: StrategiesFn | None = None) -> None:
    segments, graphs = _export_all(tmp, specs, extra, formats)
    quantization = quantize(tmp, segments) if quantize is not None else None
    strategy_section = strategies(tmp, segments) if strategies is not None else None
    all_formats = tuple(f for f in [*formats, *(f"{f}-int8" for f in formats)]
                        if all(f in s["files"] for s in segments))
    for g in graphs.values():  # an extra graph is read by the int8 backends as well
        g["files"].update({f: g["files"][f.removesuffix("-int8")] for f in all_formats
                           if f not in g["files"]})
    draft = Bundle(tmp, {"segments": segments, "graphs": graphs}, "")
    arrays, golden_section = golden(draft, all_formats)
    atomic_save_npz(tmp / GOLDEN_FILE, **arrays)
    files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.name != MANIFEST}
    total = sum(s["flops"] for s in segments)
    manifest: dict[str, Any] = {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "kind": "edge-ee-bundle",
        "model": {"name": spec.name, "task": spec.task, "granularity": spec.granularity,
                  "source_sha256": spec.source_sha256, **spec.model},
        "input": spec.input,
        "classes": list(spec.classes),
        "segments": segments,
        **({"graphs": graphs} if graphs else {}),
        **({"strategies": strategy_section} if strategy_section else {}),
        **task_section,
        "cost": dict(cost) if cost is not None else {"total_flops_all_segments": total,
                                                      "full_flops": total},
        "calibration": calibration,
        "golden": {"file": GOLDEN_FILE, "count": len(arrays["input"]), **golden_section},
        "preferred_format": formats[0],
        "provenance": {
            **spec.provenance, "torch_version": torch.__version__,
            **fmts.tool_versions(all_formats),
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
        try:
            checks[fmt], reports[fmt] = check(bundle, fmt)
        except SelfCheckError as err:
            raise ExportValidationError(f"golden self-check ({fmt}) failed at export: {err}") from err
    manifest["self_check"] = checks[formats[0]]
    manifest["validation"] = reports[formats[0]]
    if len(all_formats) > 1:
        manifest["self_check_formats"] = checks
        manifest["validation_formats"] = reports
    atomic_write_json(tmp / MANIFEST, manifest)
