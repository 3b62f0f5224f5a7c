"""Host-side errors: the device and converter hierarchy (rooted in `EdgeEEError`) plus host-only kinds."""

from __future__ import annotations

from converters.errors import ConfigError, ExportValidationError, QuantizationError
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
    "PackError",
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





class PackError(EdgeEEError):
    """A self-contained runner cannot be packed: no wheels for the platform, or the packer failed."""
