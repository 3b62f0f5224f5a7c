"""Runtime backends behind one interface: open a bundle's segments, run one segment.

`BACKENDS` maps a name to a class; each class declares the file format it reads.
A backend returns a dict of named numpy outputs, in the names the manifest lists.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from device_runners.errors import BackendError
from device_runners.manifest import Bundle


class Backend:
    """Interface: `run(segment_index, x) -> {output name: array}`."""

    name: ClassVar[str] = ""
    file_format: ClassVar[str] = ""

    def __init__(self, bundle: Bundle, threads: int = 1) -> None:
        self.bundle = bundle
        self.threads = threads

    def run(self, index: int, x: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError


class OnnxRuntimeBackend(Backend):
    """onnxruntime CPU sessions, one per segment, sequential execution, fixed threads."""

    name = "onnxruntime"
    file_format = "onnx"

    def __init__(self, bundle: Bundle, threads: int = 1) -> None:
        super().__init__(bundle, threads)
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendError("onnxruntime is not installed: pip install onnxruntime "
                               "(or choose another backend with --backend)") from err
        self._ort = ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self.sessions = []
        for seg in bundle.segments:
            path = bundle.segment_path(seg["index"], self.file_format)
            try:
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as err:  # onnxruntime raises its own exception types
                raise BackendError(f"onnxruntime cannot load {path}: {err}; re-export the bundle "
                                   "or upgrade onnxruntime") from err
            self.sessions.append(sess)
        self._names = [[o.name for o in s.get_outputs()] for s in self.sessions]
        self._inputs = [s.get_inputs()[0].name for s in self.sessions]

    def run(self, index: int, x: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.sessions[index].run(None, {self._inputs[index]: x})
        return dict(zip(self._names[index], outs, strict=True))

    def version(self) -> str:
        return f"onnxruntime {self._ort.__version__}"


class OnnxRuntimeInt8Backend(OnnxRuntimeBackend):
    """The bundle's int8 ONNX files (`onnx-int8`, QDQ) on onnxruntime."""

    name = "onnxruntime-int8"
    file_format = "onnx-int8"


# after Backend: it subclasses it (device_runners/__init__ imports this module first)
from device_runners.backend_tflite import TFLiteBackend, TFLiteInt8Backend  # noqa: E402

BACKENDS: dict[str, type[Backend]] = {
    cls.name: cls for cls in (OnnxRuntimeBackend, OnnxRuntimeInt8Backend, TFLiteBackend,
                              TFLiteInt8Backend)
}
FORMAT_BACKENDS = {cls.file_format: name for name, cls in BACKENDS.items()}


def open_backend(bundle: Bundle, name: str | None = None, threads: int = 1) -> Backend:
    """The named backend, or the first one whose format the bundle carries."""
    if name is None:
        pref = bundle.manifest.get("preferred_format")
        fmts = [pref] if pref in bundle.formats else bundle.formats
        name = next((FORMAT_BACKENDS[f] for f in fmts if f in FORMAT_BACKENDS), None)
        if name is None:
            raise BackendError(f"no backend reads this bundle's formats {bundle.formats}; "
                               f"known backends: {sorted(BACKENDS)}")
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose from {sorted(BACKENDS)}")
    cls = BACKENDS[name]
    if cls.file_format not in bundle.formats:
        raise BackendError(f"backend {name} needs {cls.file_format!r} files but this bundle has "
                           f"{bundle.formats}; re-export with that format or pick another backend")
    return cls(bundle, threads)
