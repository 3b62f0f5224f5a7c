"""Host-side errors: the device hierarchy (rooted in `EdgeEEError`) plus host-only kinds."""

from __future__ import annotations

from device_runners.errors import (
    BackendError,
    BundleError,
    ChecksumError,
    EdgeEEError,
    InputSpecError,
    ProfileError,
    ResultsError,
    SchemaVersionError,
    SelfCheckError,
)

__all__ = [
    "BackendError",
    "BundleError",
    "CalibrationError",
    "ChecksumError",
    "ConfigError",
    "DataError",
    "EdgeEEError",
    "ExportValidationError",
    "InputSpecError",
    "ModelError",
    "ProfileError",
    "QuantizationError",
    "ResultsError",
    "SchemaVersionError",
    "SelfCheckError",
]


class DataError(EdgeEEError):
    """A dataset is missing, truncated, or has labels out of range."""


class ModelError(EdgeEEError):
    """Weights cannot be read, do not fit the architecture, or cut points do not exist."""


class CalibrationError(EdgeEEError):
    """Exit statistics or thresholds cannot be computed from the data given."""


class ConfigError(EdgeEEError):
    """A configuration or recipe has unknown keys or values out of range."""


class ExportValidationError(EdgeEEError):
    """An exported graph does not reproduce torch within tolerance."""


class QuantizationError(EdgeEEError):
    """int8 quantisation cannot run: calibration data missing, of the wrong shape or dtype."""
