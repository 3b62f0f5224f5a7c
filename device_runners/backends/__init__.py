"""Runtime backends behind one interface, registered by name (`--backend NAME`).

`Backend.run(graph, feeds) -> outputs` (see `base.py`); `BACKENDS` maps a name to a
class, each class declares the file format it reads; `open_backend` chooses one for a
bundle. Adding a runtime is one module with a `@register_backend` class imported here.
"""

from __future__ import annotations

from device_runners.backends.base import BACKENDS, Backend, Feeds, GraphKey, register_backend
from device_runners.backends.onnxruntime import (
    OnnxRuntimeBackend,
    OnnxRuntimeInt8Backend,
    ort_session,
)
from device_runners.backends.tflite import TFLiteBackend, TFLiteInt8Backend
from device_runners.errors import BackendError
from device_runners.manifest import Bundle

__all__ = ["BACKENDS", "Backend", "Feeds", "GraphKey", "OnnxRuntimeBackend",
           "OnnxRuntimeInt8Backend", "TFLiteBackend", "TFLiteInt8Backend", "format_backends",
           "open_backend", "ort_session", "register_backend"]


def format_backends() -> dict[str, str]:
    """File format → the name of the backend that reads it."""
    return {cls.file_format: name for name, cls in BACKENDS.items()}


def open_backend(bundle: Bundle, name: str | None = None, threads: int = 1) -> Backend:
    """The named backend, or the first one whose format the bundle carries."""
    by_format = format_backends()
    if name is None:
        pref = bundle.manifest.get("preferred_format")
        fmts = [pref] if pref in bundle.formats else bundle.formats
        name = next((by_format[f] for f in fmts if f in by_format), None)
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
