"""Typed errors of the segmentation package, rooted in edge-ee's `EdgeEEError`."""

from __future__ import annotations

from device_runners.errors import EdgeEEError


class SegmentationError(EdgeEEError):
    """Segmentation input, labels, thresholds or weights are invalid."""
