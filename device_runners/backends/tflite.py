"""TFLite backend: `ai_edge_litert.interpreter.Interpreter`, else `tflite_runtime`'s (same API).

ai-edge-litert (numpy 2) reads every op version litert-torch writes; tflite-runtime 2.14
(what many Raspberry Pi images carry; numpy<2) is the fallback and may lack newer op
versions — such a file raises a `BackendError` that names the op and the fix.

The segment files have batch 1 (see converters/formats/tflite.py): a larger batch runs
sample by sample. Quantised (int8/uint8) inputs and outputs are (de)quantised with the
tensor's scale and zero point, and integer outputs are widened to int64, so outputs look
exactly like onnxruntime's: the names and order the manifest lists.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

import numpy as np

from device_runners.backends.base import Backend, Feeds, GraphKey, register_backend
from device_runners.errors import BackendError
from device_runners.manifest import Bundle

_OP_RE = re.compile(r"opcode '?(?P<op>[A-Za-z0-9_]+)'? version '?(?P<ver>\d+)")


def load_interpreter_class() -> tuple[Any, str]:
    """(Interpreter class, 'library version'): ai-edge-litert first, then tflite-runtime."""
    for module, dist in (("ai_edge_litert.interpreter", "ai-edge-litert"),
                         ("tflite_runtime.interpreter", "tflite-runtime")):
        try:
            mod = __import__(module, fromlist=["Interpreter"])
        except ImportError:
            continue
        try:
            ver = metadata.version(dist)
        except metadata.PackageNotFoundError:
            ver = "unknown"
        return mod.Interpreter, f"{dist} {ver}"
    raise BackendError("no TFLite interpreter is installed: pip install ai-edge-litert (numpy>=2) "
                       "or tflite-runtime (numpy<2), or choose --backend onnxruntime")


def explain_load_error(err: Exception, path: Any, lib: str) -> BackendError:
    """A BackendError that names the unsupported op (if any) and how to fix it."""
    msg = str(err)
    m = _OP_RE.search(msg)
    if m:
        return BackendError(
            f"{lib} cannot run {path}: op {m['op']} version {m['ver']} is newer than this "
            "interpreter knows; install ai-edge-litert (pip install ai-edge-litert, needs "
            "numpy>=2) instead of tflite-runtime, or run the bundle's ONNX files "
            "(--backend onnxruntime)")
    return BackendError(f"{lib} cannot load {path}: {msg.strip()}; re-export the bundle with "
                        "--formats tflite or choose another --backend")


class _Segment:
    """One interpreter with its input/output tensor details, in manifest output order."""

    def __init__(self, interp: Any, out_names: list[str]) -> None:
        self.interp = interp
        self.inp = interp.get_input_details()[0]
        by_sig = _signature_outputs(interp)
        details = {d["index"]: d for d in interp.get_output_details()}
        if len(by_sig) != len(out_names):
            raise BackendError(f"TFLite graph has {len(by_sig)} outputs, the manifest lists "
                               f"{len(out_names)}; re-export the bundle")
        self.outs = [(name, details[idx]) for name, idx in zip(out_names, by_sig, strict=True)]
        self.batch = int(self.inp["shape"][0])

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        it = self.interp
        it.set_tensor(self.inp["index"], _quantize(x, self.inp))
        it.invoke()
        return [_dequantize(it.get_tensor(d["index"]), d) for _, d in self.outs]


def _signature_outputs(interp: Any) -> list[int]:
    """Output tensor indices in signature order (output_0, output_1, …)."""
    try:
        sigs = interp._get_full_signature_list()
        outs = next(iter(sigs.values()))["outputs"]
    except (AttributeError, StopIteration, KeyError):
        return [d["index"] for d in interp.get_output_details()]
    key = lambda kv: int(re.sub(r"\D", "", kv[0]) or 0)  # noqa: E731
    return [idx for _, idx in sorted(outs.items(), key=key)]


def _quantize(x: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    scale, zero = d["quantization"]
    dt = np.dtype(d["dtype"])
    if dt.kind in "iu" and scale:
        info = np.iinfo(dt)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dt)
    return np.ascontiguousarray(x, dtype=dt)


def _dequantize(v: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    scale, zero = d["quantization"]
    if v.dtype.kind in "iu" and scale:
        return ((v.astype(np.float32) - np.float32(zero)) * np.float32(scale)).astype(np.float32)
    if v.dtype.kind in "iu":
        return v.astype(np.int64)
    return v


@register_backend
class TFLiteBackend(Backend):
    """One TFLite interpreter per graph; `threads` is the interpreter's num_threads."""

    name = "tflite"
    file_format = "tflite"

    def __init__(self, bundle: Bundle, threads: int = 1) -> None:
        super().__init__(bundle, threads)
        interp_cls, self._lib = load_interpreter_class()
        self.graphs: dict[GraphKey, _Segment] = {}
        for key in bundle.graph_keys(self.file_format):
            path = bundle.graph_path(key, self.file_format)
            try:
                interp = interp_cls(model_path=str(path), num_threads=threads)
                interp.allocate_tensors()
            except (RuntimeError, ValueError) as err:
                raise explain_load_error(err, path, self._lib) from err
            names, outs = self.graph_io(key)
            if len(names) != 1 or len(interp.get_input_details()) != 1:
                raise BackendError(f"graph {key!r} takes inputs {names}; the TFLite backend runs "
                                   "single-input graphs only — use --backend onnxruntime")
            self.graphs[key] = _Segment(interp, outs)

    def run(self, graph: GraphKey, feeds: Feeds | np.ndarray) -> dict[str, np.ndarray]:
        seg = self.graphs[graph]
        (x,) = self._feeds(graph, feeds).values()
        if len(x) == seg.batch:
            outs = seg.run(x)
        else:
            parts = [seg.run(x[n : n + 1]) for n in range(len(x))]
            outs = [np.concatenate(p) for p in zip(*parts, strict=True)]
        return {name: v for (name, _), v in zip(seg.outs, outs, strict=True)}

    def version(self) -> str:
        return self._lib


@register_backend
class TFLiteInt8Backend(TFLiteBackend):
    """The bundle's int8 TFLite files (`tflite-int8`)."""

    name = "tflite-int8"
    file_format = "tflite-int8"
