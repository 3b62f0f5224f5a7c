"""Typed errors of early exit for clustering, under edge-ee's one root (`EdgeEEError`)."""

from __future__ import annotations

from edge_ee.errors import CalibrationError


class ClusterCollapseError(CalibrationError):
    """The embedding collapsed: (nearly) every sample falls in one cluster, or clusters are empty."""
