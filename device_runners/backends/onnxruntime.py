"""onnxruntime backends (fp32 `onnx` and int8 `onnx-int8` files) and the one session factory.

`ort_session` is the only place an onnxruntime `InferenceSession` is made, on the device
and on the host alike (export validation, overhead measurement): CPU provider,
sequential execution, a fixed number of intra-op threads, quiet logging.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from device_runners.backends.base import Backend, Feeds, GraphKey, register_backend
from device_runners.errors import BackendError
from device_runners.manifest import Bundle


def import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise BackendError("onnxruntime is not installed: pip install onnxruntime "
                           "(or choose another backend with --backend)") from err
    return ort


def ort_session(path: str | Path, threads: int = 1, disabled_optimizers: list[str] | None = None,
                **options: Any) -> Any:
    """An onnxruntime CPU session with the project's settings; `options` set SessionOptions
    attributes (e.g. graph_optimization_level); `disabled_optimizers` names graph
    transformers to leave out (e.g. "NchwcTransformer", for measurements)."""
    ort = import_ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    for key, value in options.items():
        setattr(opts, key, value)
    try:
        more = {"disabled_optimizers": disabled_optimizers} if disabled_optimizers else {}
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"], **more)
    except Exception as err:  # onnxruntime raises its own exception types
        raise BackendError(f"onnxruntime cannot load {path}: {err}; re-export the bundle "
                           "or upgrade onnxruntime") from err


@register_backend
class OnnxRuntimeBackend(Backend):
    """onnxruntime CPU sessions, one per graph, sequential execution, fixed threads."""

    name = "onnxruntime"
    file_format = "onnx"

    def __init__(self, bundle: Bundle, threads: int = 1) -> None:
        super().__init__(bundle, threads)
        self._ort = import_ort()
        self.sessions: dict[GraphKey, Any] = {}
        self._io: dict[GraphKey, tuple[list[str], list[str], list[str]]] = {}
        for key in bundle.graph_keys(self.file_format):
            sess = ort_session(bundle.graph_path(key, self.file_format), threads)
            names, outs = self.graph_io(key)
            graph_in = [i.name for i in sess.get_inputs()]
            if len(graph_in) != len(names):
                raise BackendError(f"graph {key!r} takes {len(graph_in)} inputs, the manifest "
                                   f"lists {names}; re-export the bundle")
            # the manifest's names in the graph's order (positional when they differ)
            self._io[key] = (names, graph_in if set(graph_in) == set(names) else names, outs)
            self.sessions[key] = sess

    def run(self, graph: GraphKey, feeds: Feeds | np.ndarray) -> dict[str, np.ndarray]:
        names, graph_in, outs = self._io[graph]
        given = self._feeds(graph, feeds)
        if graph_in is names:  # names differ from the graph's: positional
            real = [i.name for i in self.sessions[graph].get_inputs()]
            arg = {r: given[n] for r, n in zip(real, names, strict=True)}
        else:
            arg = given
        return dict(zip(outs, self.sessions[graph].run(None, arg), strict=True))

    def version(self) -> str:
        return f"onnxruntime {self._ort.__version__}"


@register_backend
class OnnxRuntimeInt8Backend(OnnxRuntimeBackend):
    """The bundle's int8 ONNX files (`onnx-int8`, QDQ) on onnxruntime."""

    name = "onnxruntime-int8"
    file_format = "onnx-int8"
