"""Torch-free side of edge-ee: runs an exit-split bundle on a device and records raw results.

Only the standard library, numpy, pyyaml and one runtime (onnxruntime or a TFLite
interpreter) may be imported here; `tests/test_device_no_torch.py` proves it.
"""

__version__ = "0.1.0"

# The backend registry first: backend_tflite subclasses backends.Backend and is imported
# by it, so importing backend_tflite on its own must find the registry loaded.
from device_runners import backends as _backends  # noqa: F401
