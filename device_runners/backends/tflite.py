"""TFLite backend: `ai_edge_litert.interpreter.Interpreter`, else `tflite_runtime`'s (same API).

ai-edge-litert (numpy 2) reads every op version litert-torch writes; tflite-runtime 2.14
(what many Raspberry Pi images carry; numpy<2) is the fallback and may lack newer op
versions — such a file raises a `BackendError` that names the op and the fix.

The segment files have batch 1 (see converters/formats/tflite.py): a larger batch of a
single-input graph runs sample by sample; a multi-input graph (segmentation's token
segments: grid + running-token index) runs batch 1 only. Inputs map to the signature's
args_0, args_1, … in the manifest's order. A graph whose manifest entry has `padding`
carries one signature per padded length (converters.spec.Padding): the feed is padded
to the next length and the listed outputs trimmed back. Quantised (int8/uint8) inputs and
outputs are (de)quantised with the tensor's scale and zero point, and integer outputs are
widened to int64, so outputs look exactly like onnxruntime's: the names and order the
manifest lists.
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


class _Signature:
    """One signature of a graph file: its input tensors in the manifest's input order
    (args_0, args_1, …) and its outputs in the manifest's output order (output_0, …).
    A file with one signature runs through the interpreter's own tensors (the fast
    path); a file with several (padded lengths) through a signature runner each."""

    def __init__(self, interp: Any, key: str | None, n_in: int, out_names: list[str],
                 single: bool) -> None:
        if key is None:  # no signature in the file: the interpreter's tensor order
            ins, outs = interp.get_input_details(), interp.get_output_details()
            self.inp, out_d, self.runner = ins, outs, None
        else:
            r = interp.get_signature_runner(key)
            ind, outd = r.get_input_details(), r.get_output_details()
            self.in_keys = sorted(ind, key=_position)
            self.out_keys = sorted(outd, key=_position)
            self.inp = [ind[k] for k in self.in_keys]
            out_d = [outd[k] for k in self.out_keys]
            self.runner = None if single else r  # one signature: subgraph 0's tensor indices
        if len(self.inp) != n_in or len(out_d) != len(out_names):
            raise BackendError(f"TFLite graph has {len(self.inp)} inputs / {len(out_d)} outputs, "
                               f"the manifest lists {n_in} / {len(out_names)}; re-export the bundle")
        self.interp = interp
        self.outs = list(zip(out_names, out_d, strict=True))
        self.batch = int(self.inp[0]["shape"][0]) if len(self.inp[0]["shape"]) else 1

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self.runner is not None:
            res = self.runner(**{k: _quantize(a, d) for k, a, d
                                 in zip(self.in_keys, arrays, self.inp, strict=True)})
            return [_dequantize(res[k], d) for k, (_, d) in zip(self.out_keys, self.outs,
                                                                strict=True)]
        it = self.interp
        for a, d in zip(arrays, self.inp, strict=True):
            it.set_tensor(d["index"], _quantize(a, d))
        it.invoke()
        return [_dequantize(it.get_tensor(d["index"]), d) for _, d in self.outs]


class _Graph:
    """The signatures of one graph file; with a manifest `padding` entry, one per padded
    length of that input (the feed is padded up to the next length, outputs trimmed)."""

    def __init__(self, interp: Any, in_names: list[str], out_names: list[str],
                 padding: dict[str, Any] | None) -> None:
        keys = list(interp.get_signature_list() or {})
        sigs = [_Signature(interp, k, len(in_names), out_names, len(keys) == 1)
                for k in keys] or [_Signature(interp, None, len(in_names), out_names, True)]
        self.in_names, self.outs, self.pad = in_names, sigs[0].outs, padding
        self.batch = sigs[0].batch
        if padding is None:
            if len(sigs) != 1:
                raise BackendError(f"TFLite graph has {len(sigs)} signatures and the manifest no "
                                   "padding entry; re-export the bundle")
            self.sigs = {None: sigs[0]}
            return
        if padding["input"] not in in_names:
            raise BackendError(f"manifest padding names input {padding['input']!r}, the graph "
                               f"takes {in_names}; re-export the bundle")
        self.k, ax = in_names.index(padding["input"]), int(padding.get("axis", 0))
        self.sigs = {int(s.inp[self.k]["shape"][ax]): s for s in sigs}
        self.sizes = sorted(self.sigs)
        self.trim = [name in padding["outputs"] for name, _ in self.outs]

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self.pad is None:
            return self.sigs[None].run(arrays)
        ax = int(self.pad.get("axis", 0))
        a = arrays[self.k]
        m = a.shape[ax]
        size = next((s for s in self.sizes if s >= m), None)
        if size is None:
            raise BackendError(f"input {self.pad['input']!r} has length {m}; this TFLite graph "
                               f"takes at most {self.sizes[-1]}; re-export the bundle")
        if size > m:
            widths = [(0, 0)] * a.ndim
            widths[ax] = (0, size - m)
            a = np.pad(a, widths, constant_values=self.pad["value"])
        outs = self.sigs[size].run([*arrays[:self.k], a, *arrays[self.k + 1:]])
        return [v[:m] if t else v for v, t in zip(outs, self.trim, strict=True)]


def _position(key: str) -> int:
    """args_3 / output_3 → 3 (signature tensors in positional order)."""
    return int(re.sub(r"\D", "", key) or 0)


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
        self.graphs: dict[GraphKey, _Graph] = {}
        for key in bundle.graph_keys(self.file_format):
            path = bundle.graph_path(key, self.file_format)
            try:
                interp = interp_cls(model_path=str(path), num_threads=threads)
                interp.allocate_tensors()
            except (RuntimeError, ValueError) as err:
                raise explain_load_error(err, path, self._lib) from err
            names, outs = self.graph_io(key)
            self.graphs[key] = _Graph(interp, names, outs, bundle.graph_entry(key).get("padding"))

    def run(self, graph: GraphKey, feeds: Feeds | np.ndarray) -> dict[str, np.ndarray]:
        g = self.graphs[graph]
        arrays = list(self._feeds(graph, feeds).values())
        if len(arrays[0]) == g.batch:
            outs = g.run(arrays)
        elif len(arrays) == 1:  # a batch-1 file: sample by sample
            parts = [g.run([arrays[0][n : n + 1]]) for n in range(len(arrays[0]))]
            outs = [np.concatenate(p) for p in zip(*parts, strict=True)]
        else:
            raise BackendError(
                f"graph {graph!r} takes {g.in_names} with batch {g.batch} in TFLite and cannot be "
                f"split by sample (got batch {len(arrays[0])}); use --mode single or "
                "--backend onnxruntime for batches")
        return {name: v for (name, _), v in zip(g.outs, outs, strict=True)}

    def version(self) -> str:
        return self._lib


@register_backend
class TFLiteInt8Backend(TFLiteBackend):
    """The bundle's int8 TFLite files (`tflite-int8`)."""

    name = "tflite-int8"
    file_format = "tflite-int8"
