"""Export one segment module to a self-contained ONNX file with a dynamic batch axis.

Uses the dynamo exporter (`torch.onnx.export(..., dynamo=True)`, needs onnxscript) with
`external_data=False` so each segment is one file, and checks the model with onnx.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from edge_ee.errors import ExportValidationError

OPSET = 20


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path,
                output_names: Sequence[str], input_name: str = "x",
                dynamic_batch: bool = True) -> Path:
    """Write `module` as ONNX to `path`; the caller validates it before it counts."""
    module.eval()
    kwargs: dict = {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = {"x": {0: torch.export.Dim("batch", max=65536)}}
        if example.shape[0] < 2:  # a batch of 1 would be specialised as a constant
            example = example.repeat(2, *([1] * (example.dim() - 1)))
    sink = io.StringIO()
    for name in ("torch.onnx", "torch.onnx._internal.exporter._registration"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (example,), str(path), dynamo=True, external_data=False,
                input_names=[input_name], output_names=list(output_names), opset_version=OPSET,
                verbose=False, **kwargs,
            )
        onnx.checker.check_model(str(path))
    except Exception as err:  # the exporter raises many kinds; report them as one
        raise ExportValidationError(
            f"ONNX export of {type(module).__name__} failed: {err}; "
            "check that the segment uses only exportable ops"
        ) from err
    return path


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
