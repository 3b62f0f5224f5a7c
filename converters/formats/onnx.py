"""ONNX export of one graph: the project's one `torch.onnx.export` call and its opset.

Uses the dynamo exporter (`torch.onnx.export(..., dynamo=True)`, needs onnxscript) with
`external_data=False` so each graph is one self-contained file, dynamic axes from the
spec (`torch.export.Dim`), and checks the model with onnx. The exporter's own chatter
(stdout, warnings, its loggers) is silenced for the call only (`converters.quiet`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from converters.errors import ExportValidationError
from converters.quiet import quiet
from converters.spec import DynamicAxis, SegmentSpec

OPSET = 20
EXT = "onnx"
ONNX_LOGGERS = ("torch.onnx", "torch.onnx._internal.exporter._registration")


def _dim(axis: DynamicAxis) -> torch.export.Dim:
    kw = {k: v for k, v in (("min", axis.min), ("max", axis.max)) if v is not None}
    return torch.export.Dim(axis.name, **kw)


def export_graph(module: nn.Module, args: Sequence[torch.Tensor], path: Path,
                 input_names: Sequence[str], output_names: Sequence[str],
                 dynamic_axes: Mapping[str, Mapping[int, DynamicAxis]] | None = None) -> Path:
    """Write `module` (called on `args`, named `input_names`) as ONNX to `path`.

    An example whose dynamic axis has size 1 is repeated to 2 along it (the exporter
    would specialise a size-1 dimension to a constant). The caller validates the file."""
    module.eval()
    dynamic_axes = dynamic_axes or {}
    args = list(args)
    shapes = []
    dims: dict[str, torch.export.Dim] = {}  # one Dim per name: equal names are one size
    for i, name in enumerate(input_names):
        axes = dynamic_axes.get(name) or {}
        for ax in axes:
            if args[i].shape[ax] < 2:
                reps = [1] * args[i].dim()
                reps[ax] = 2
                args[i] = args[i].repeat(*reps)
        shapes.append({ax: dims.setdefault(d.name, _dim(d)) for ax, d in axes.items()} or None)
    dyn = _by_signature(module, shapes) if any(s is not None for s in shapes) else None
    try:
        with quiet(ONNX_LOGGERS), torch.no_grad():
            torch.onnx.export(module, tuple(args), str(path), dynamo=True, external_data=False,
                              input_names=list(input_names), output_names=list(output_names),
                              opset_version=OPSET, dynamic_shapes=dyn, verbose=False)
        onnx.checker.check_model(str(path))
    except Exception as err:  # the exporter raises many kinds; report them as one
        raise ExportValidationError(
            f"ONNX export of {type(module).__name__} failed: {err}; "
            "check that the segment uses only exportable ops") from err
    return path


def _by_signature(module: nn.Module, shapes: list) -> tuple:
    """Per-input dynamic shapes grouped like `forward`'s parameters: the inputs a
    `*args` parameter takes form one tuple (torch.export matches the signature)."""
    params = list(inspect.signature(module.forward).parameters.values())
    if params and params[-1].kind is inspect.Parameter.VAR_POSITIONAL:
        n = len(params) - 1
        return (*shapes[:n], tuple(shapes[n:]))
    return tuple(shapes)


def export_spec(spec: SegmentSpec, path: Path) -> Path:
    """Write one segment spec as ONNX."""
    return export_graph(spec.module, spec.example_args(), path, spec.input_names,
                        spec.output_names, spec.dynamic_axes)


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path,
                output_names: Sequence[str], input_name: str = "x",
                dynamic_batch: bool = True) -> Path:
    """One-input shorthand of `export_graph` with a dynamic batch axis."""
    axes = {input_name: {0: DynamicAxis("batch", max=65536)}} if dynamic_batch else None
    return export_graph(module, (example,), path, (input_name,), output_names, axes)


def tool_versions() -> dict[str, object]:
    """The versions a manifest records for ONNX files."""
    from importlib import metadata
    out: dict[str, object] = {"onnx_version": onnx.__version__, "onnx_opset": OPSET}
    try:
        out["onnxruntime_version"] = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        pass
    return out
