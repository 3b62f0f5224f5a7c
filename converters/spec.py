"""Neutral specs the converters export: what a segment graph is, and what a bundle says.

The converters know nothing of `ExitNet`, exit heads or tasks. A task (in `edge_ee`)
describes each graph as a `SegmentSpec` — a torch module, example feeds, named inputs and
outputs, dynamic axes, its cost, the manifest's exit description, and per output how an
exported graph's value is compared with torch's (`Compare`) — and the bundle as a
`BundleSpec` (model section, input spec, classes, provenance). `converters.formats`
exports specs, `converters.validate` compares them, `converters.bundle` writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

COMPARE_KINDS = ("float", "confidence", "decision")


@dataclass(frozen=True)
class Compare:
    """How one output of an exported graph is compared with torch's.

    * `float`: |got − want| <= atol + rtol·|want| (the tolerance's atol/rtol);
    * `confidence`: the same with the tolerance's confidence_atol (values passed through
      exp/softmax of large scores);
    * `decision`: equal values, except where the decision may flip: within the
      tolerance's confidence_atol of `threshold` on the output named `near` (an exit
      flag), or where `tie_scores` (torch's reference outputs → class scores) has its two
      best scores equal up to the tolerance's tie_rtol (a prediction).
    """

    kind: str = "float"
    near: str | None = None
    threshold: float | None = None
    tie_scores: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.kind not in COMPARE_KINDS:
            raise ValueError(f"Compare kind must be one of {COMPARE_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class DynamicAxis:
    """A dynamic dimension of one input: its name and bounds (torch.export.Dim)."""

    name: str
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class Padding:
    """A dynamic input axis that formats without dynamic shapes carry at fixed lengths.

    The graph must compute its real rows unchanged when `input` is padded along `axis`
    with `value` (e.g. a gather index padded with a spare row's index). Such a format
    (TFLite) writes one signature per length in `sizes`; the runtime pads a feed to the
    smallest length that holds it and trims the `outputs` back along their axis 0. The
    manifest records it as the segment's `padding` entry."""

    input: str
    sizes: tuple[int, ...]
    value: int
    outputs: tuple[str, ...]
    axis: int = 0

    def __post_init__(self) -> None:
        if not self.sizes or any(int(v) < 1 for v in self.sizes):
            raise ValueError(f"Padding sizes must be positive lengths, got {self.sizes}")

    def to_manifest(self) -> dict[str, Any]:
        return {"input": self.input, "axis": self.axis, "sizes": sorted(int(v) for v in self.sizes),
                "value": int(self.value), "outputs": list(self.outputs)}


@dataclass(frozen=True)
class SegmentSpec:
    """One graph of a bundle: a torch module and what the manifest says about it.

    `example` maps every input name to an example tensor (shapes and dtypes of a real
    feed); `dynamic_axes` maps an input name to {axis: DynamicAxis}. `exit` is the
    manifest's exit description (kind "final" for the last segment). `passes_on` names
    the output a chain feeds to the next segment (None: the chain ends here). `manifest`
    holds further keys of the segment's manifest entry (e.g. dense_flops). `padding`:
    how a format without dynamic shapes carries a dynamic axis (see `Padding`)."""

    module: nn.Module
    example: Mapping[str, torch.Tensor]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    flops: int
    params: int
    exit: dict[str, Any]
    stages: list[Any]
    compare: Mapping[str, Compare] = field(default_factory=dict)
    dynamic_axes: Mapping[str, Mapping[int, DynamicAxis]] = field(default_factory=dict)
    passes_on: str | None = None
    name: str | None = None
    manifest: Mapping[str, Any] = field(default_factory=dict)
    padding: Padding | None = None

    @property
    def is_exit(self) -> bool:
        """Whether the segment ends at an early exit (its feature goes on)."""
        return self.passes_on is not None

    def example_args(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.example[n] for n in self.input_names)

    def compare_of(self, output: str) -> Compare:
        return self.compare.get(output, Compare())


@dataclass(frozen=True)
class BundleSpec:
    """What the manifest says about the model beyond its segments.

    `input` is the manifest's input section (name, shape with None batch, dtype, layout,
    optional `raw` image spec); `model` holds further keys of the model section (e.g.
    variant, architecture); `provenance` the producing tool's versions (passed in by the
    caller: the converters do not import it)."""

    name: str
    classes: tuple[str, ...]
    input: dict[str, Any]
    task: str = "classification"
    granularity: str = "sample"
    source_sha256: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input's shape without the batch axis."""
        return tuple(int(v) for v in self.input["shape"][1:])


def image_input(shape: tuple[int, ...], mean: tuple[float, ...] = (), std: tuple[float, ...] = (),
                name: str = "x", raw_geometry: dict[str, Any] | None = None,
                **more: Any) -> dict[str, Any]:
    """An NCHW float32 input section; with `mean`/`std` also the raw uint8 NHWC image spec
    the device normalises ((x/255 − mean) / std per channel), plus `raw_geometry`
    ({resize, crop}: how image files are resized and cropped to it) when given."""
    spec: dict[str, Any] = {"name": name, "shape": [None, *shape], "dtype": "float32",
                            "layout": "NCHW", **more}
    if mean:
        c, h, w = shape
        spec["raw"] = {"dtype": "uint8", "shape": [None, h, w, c], "layout": "NHWC",
                       "scale": 1.0 / 255.0, "mean": list(mean), "std": list(std)}
        if raw_geometry and any(v is not None for v in raw_geometry.values()):
            spec["raw"].update(raw_geometry)
    return spec
