"""Torch-free side of edge-ee: runs an exit-split bundle on a device and records raw results.

Only the standard library, numpy, pyyaml and one runtime (onnxruntime or a TFLite
interpreter) may be imported here; `tests/test_device_no_torch.py` proves it.
"""

__version__ = "0.1.0"

