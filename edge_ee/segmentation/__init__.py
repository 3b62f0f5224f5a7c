"""Early-exit semantic segmentation with per-pixel exits and class-based thresholds (CBT).

Modules: `data` (CamVid loader), `model` (token-wise early-exit net), `train`,
`cbt` (METHODS.md §3 thresholds), `pixel_exit` (masked dense and gathered execution,
masked FLOPs), `metrics` (mIoU), `export` (ONNX graphs), `bundle` (edge-ee bundles, validated against
torch; run by `device_runners.executor` (token exits)), `build` (`edge-ee seg-build`).
Importing this package does not import torch; the submodules that need it do.
"""

from edge_ee.segmentation.errors import SegmentationError

__all__ = ["SegmentationError"]
