"""int8-consistent exit thresholds: calibrate on the int8 file's own scores, bake them in.

An int8 segment's confidences shift near the thresholds, so fp32 thresholds taken over
unchanged decide differently (87-92 % exit agreement measured on ResNet-56) and the int8
bundle no longer delivers what calibration promised. After the int8 files of a chain are
written, `recalibrate` runs that int8 chain itself (onnxruntime, its own features fed
forward, every sample through every segment) through a task hook, which chooses the
thresholds on those scores with the task's own search and certification
(`edge_ee.int8_calibration` for classification) and returns one per exit segment. The
chain runs on its own format's runtime (onnxruntime for `onnx-int8`, the LiteRT
interpreter for `tflite-int8`), and each threshold is written into its int8 file:
`patch_onnx_threshold` (the initializer compared with the `confidence` output by the
exit's `Greater` node) or `converters.formats.tflite.patch_tflite_threshold` (the float32
constant of the flatbuffer's `GREATER` op, rewritten in place). fp32 files keep theirs;
`exit.thresholds_by_format` records each int8 format's own.
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
    """Run the hook on the int8 chain of `fmt` ('onnx' | 'tflite') in `tmp`, patch its
    thresholds into its files; the record."""
    from converters.formats.tflite import patch_tflite_threshold
    from converters.quantize import onnx_runner, tflite_runner
    key = f"{fmt}-int8"
    runner, patch, runtime = {
        "onnx": (onnx_runner, patch_onnx_threshold, "onnxruntime"),
        "tflite": (tflite_runner, patch_tflite_threshold, "LiteRT interpreter")}[fmt]
    exit_segs = [i for i, s in enumerate(specs) if s.is_exit]
    runners = [runner(tmp / segments[i]["files"][key], s.output_names)
               for i, s in enumerate(specs)]
    out = hook(lambda i, x: runners[i](np.ascontiguousarray(x, np.float32)), exit_segs)
    thresholds = out.pop("thresholds")
    fp32 = {}
    for i, t in thresholds.items():
        fp32[i] = patch(tmp / segments[i]["files"][key], t)
        finite = float(t) if np.isfinite(t) else None
        own = {**(segments[i]["exit"].get("thresholds_by_format") or {}), key: finite}
        segments[i]["exit"] = {**segments[i]["exit"], "thresholds_by_format": own}
    return {"source": f"the {key} files' own scores ({runtime})",
            "thresholds": {str(i): (float(t) if np.isfinite(t) else None)
                           for i, t in thresholds.items()},
            "fp32_thresholds": {str(i): v for i, v in fp32.items()}, **out}
