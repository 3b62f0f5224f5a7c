"""The one exception hierarchy of edge-ee.

It lives on the device side because `device_runners` must work without the host
package installed; `edge_ee.errors` re-exports it and adds host-only subclasses.
Every error message says what is wrong *and* how to fix it. CLIs map
`EdgeEEError` to exit code 2 (bad input) and print only the message.
"""

from __future__ import annotations


class EdgeEEError(Exception):
    """Root of every error edge-ee raises on purpose."""

    exit_code = 2


class BundleError(EdgeEEError):
    """A bundle is missing, incomplete, tampered with, or of an unsupported schema."""


class ChecksumError(BundleError):
    """A bundle file's sha256 does not match the manifest."""


class SchemaVersionError(BundleError):
    """A manifest or results file was written by a newer edge-ee than this one."""


class InputSpecError(EdgeEEError):
    """An input has the wrong shape, dtype or layout for the bundle."""


class SelfCheckError(EdgeEEError):
    """The runtime on this device does not reproduce the bundle's golden outputs."""


class BackendError(EdgeEEError):
    """A runtime backend is not installed or cannot run the bundle's graphs."""


class ProfileError(EdgeEEError):
    """A hardware profile YAML is malformed, has unknown keys or values without units."""


class PowerSourceError(EdgeEEError):
    """A power sensor cannot be found or read."""


class ResultsError(EdgeEEError):
    """A results file is malformed or does not belong to the given bundle."""


class OverheadsError(EdgeEEError):
    """A device-measured overheads file is malformed or belongs to another model or exits."""
