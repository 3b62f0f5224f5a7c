"""Errors the converters raise: an export or a quantisation that cannot be done or trusted.

Both live under the project's one root (`device_runners.errors.EdgeEEError`);
`edge_ee.errors` re-exports them under the same names.
"""

from __future__ import annotations

from device_runners.errors import EdgeEEError


class ConfigError(EdgeEEError):
    """A configuration or recipe has unknown keys or values out of range."""


class ExportValidationError(EdgeEEError):
    """An exported graph does not reproduce torch within tolerance."""


class QuantizationError(EdgeEEError):
    """int8 quantisation cannot run: calibration data missing, of the wrong shape or dtype."""
