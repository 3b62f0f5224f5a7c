"""The registry of graph formats a bundle can carry, by name (`--formats onnx,tflite`).

A format is one module with `EXT`, `export_spec(spec, path)` and `tool_versions()`,
registered here; `export` writes one segment spec in a named format. int8 variants
("<format>-int8") are made from the fp32 files by `converters.quantize`. The TFLite
module imports litert-torch only when it exports, so the registry loads without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from converters.errors import ConfigError
from converters.formats import onnx as _onnx
from converters.formats import tflite as _tflite
from converters.formats.onnx import OPSET
from converters.spec import SegmentSpec

__all__ = ["FORMATS", "OPSET", "GraphFormat", "check_formats", "export", "register_format",
           "tool_versions"]


@dataclass(frozen=True)
class GraphFormat:
    """A file format: its extension, its exporter and the tool versions it records."""

    name: str
    ext: str
    export_spec: Callable[[SegmentSpec, Path], Path]
    tool_versions: Callable[[], dict[str, object]]


FORMATS: dict[str, GraphFormat] = {}


def register_format(fmt: GraphFormat) -> GraphFormat:
    """Make a format selectable by name."""
    FORMATS[fmt.name] = fmt
    return fmt


register_format(GraphFormat("onnx", _onnx.EXT, _onnx.export_spec, _onnx.tool_versions))
register_format(GraphFormat("tflite", _tflite.EXT, _tflite.export_spec, _tflite.tool_versions))


def check_formats(formats: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The named formats without repeats, or a ConfigError naming the known ones."""
    out = tuple(dict.fromkeys(formats))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise ConfigError(f"unknown export formats {bad or list(out)}; choose from {list(FORMATS)}")
    return out


def export(fmt: str, spec: SegmentSpec, folder: Path, stem: str) -> str:
    """Write `spec` as `<stem>.<ext>` in `folder` in format `fmt`; returns the file name."""
    name = f"{stem}.{FORMATS[fmt].ext}"
    FORMATS[fmt].export_spec(spec, folder / name)
    return name


def tool_versions(formats: tuple[str, ...] | list[str]) -> dict[str, object]:
    """Tool versions of every format used (int8 variants count as their base format); the
    ONNX versions always (the onnx package checks every export)."""
    out: dict[str, object] = FORMATS["onnx"].tool_versions()
    for f in dict.fromkeys(f.removesuffix("-int8") for f in formats):
        out.update(FORMATS[f].tool_versions())
    return out
