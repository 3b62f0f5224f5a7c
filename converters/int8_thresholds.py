"""int8-consistent exit thresholds: calibrate on the int8 file's own scores, bake them in.

An int8 segment's confidences shift near the thresholds, so fp32 thresholds taken over
unchanged decide differently (87-92 % exit agreement measured on ResNet-56) and the int8
bundle no longer delivers what calibration promised. After the int8 files of a chain are
written, `recalibrate` runs that int8 chain itself (onnxruntime, its own features fed
forward, every sample through every segment) through a task hook, which chooses the
thresholds on those scores with the task's own search and certification
(`edge_ee.int8_calibration` for classification) and returns one per exit segment.
`patch_onnx_threshold` then writes each into its int8 graph: the initializer compared
with the `confidence` output by the exit's `Greater` node (fp32 files keep theirs).

TFLite int8 files keep the fp32 thresholds (their threshold is folded into the
flatbuffer by the converter; re-exporting per threshold is not done): the record says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from converters.errors import QuantizationError
from converters.spec import SegmentSpec

#: hook(run(i, x) -> outputs of int8 segment i, exit segments' indices) ->
#: {"thresholds": {segment index: threshold}, ...record}
ThresholdHook = Callable[[Callable[[int, np.ndarray], dict[str, np.ndarray]], list[int]],
                         dict[str, Any]]


def patch_onnx_threshold(path: Path, value: float) -> float:
    """Set the threshold an exit graph compares its confidence with; returns the old one."""
    model = onnx.load(str(path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    cmp = [n for n in g.node if n.op_type == "Greater" and n.input and n.input[0] == "confidence"
           and len(n.input) == 2 and n.input[1] in inits]
    if len(cmp) != 1:
        raise QuantizationError(f"{path.name}: found {len(cmp)} 'confidence > threshold' "
                                "comparisons with a constant threshold, need exactly 1; export "
                                "the exit heads with edge-ee (or keep fp32 thresholds)")
    init = inits[cmp[0].input[1]]
    old = numpy_helper.to_array(init)
    if old.size != 1:
        raise QuantizationError(f"{path.name}: the threshold constant has shape {old.shape}, "
                                "not a scalar; keep fp32 thresholds for this bundle")
    new = numpy_helper.from_array(np.asarray(value, old.dtype).reshape(old.shape), init.name)
    init.CopyFrom(new)
    onnx.save(model, str(path))
    return float(old.reshape(()))


def recalibrate(tmp: Path, specs: Sequence[SegmentSpec], segments: list[dict[str, Any]],
                fmt: str, hook: ThresholdHook) -> dict[str, Any]:
    """Run the hook on the int8 chain of `fmt` in `tmp`, patch its thresholds; the record."""
    key = f"{fmt}-int8"
    exit_segs = [i for i, s in enumerate(specs) if s.is_exit]
    if fmt != "onnx":
        return {"source": "fp32 thresholds (int8-consistent thresholds are ONNX-only)"}
    from converters.quantize import onnx_runner
    runners = [onnx_runner(tmp / segments[i]["files"][key], s.output_names)
               for i, s in enumerate(specs)]
    out = hook(lambda i, x: runners[i](np.ascontiguousarray(x, np.float32)), exit_segs)
    thresholds = out.pop("thresholds")
    fp32 = {}
    for i, t in thresholds.items():
        fp32[i] = patch_onnx_threshold(tmp / segments[i]["files"][key], t)
        finite = float(t) if np.isfinite(t) else None
        segments[i]["exit"] = {**segments[i]["exit"],
                               "thresholds_by_format": {key: finite}}
    return {"source": f"the {key} files' own scores (onnxruntime)",
            "thresholds": {str(i): (float(t) if np.isfinite(t) else None)
                           for i, t in thresholds.items()},
            "fp32_thresholds": {str(i): v for i, v in fp32.items()}, **out}
