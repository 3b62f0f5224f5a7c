"""The run result (device → host contract): raw, schema-versioned, written atomically.

No statistics are computed here; `edge-ee report` does that on the host. Samples are
stored column-wise (one list per field) to keep files small.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
from pathlib import Path
from typing import Any

import numpy as np

from device_runners import __version__
from device_runners.errors import ResultsError, SchemaVersionError
from device_runners.files import atomic_write_json as atomic_write_json  # re-exported

RESULTS_SCHEMA_VERSION = 1
REQUIRED = ("schema_version", "kind", "bundle", "backend", "protocol", "samples", "complete")


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "runner_file": str(Path(__file__).parent),
    }


def results_document(bundle: Any, backend: Any, threads: int, protocol: dict[str, Any],
                     init_ns: int, self_check: Any, run: dict[str, Any],
                     task: str | None = None) -> dict[str, Any]:
    """results.json: who ran what where (bundle hash, backend, environment, protocol), then
    the raw run (`session.measure_window`'s output). Shared by every task."""
    doc: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION, "kind": "edge-ee-results",
        **({"task": task} if task else {}), "runner_version": __version__,
        "bundle": {"manifest_sha256": bundle.manifest_sha256,
                   "model": bundle.manifest["model"]["name"], "path": str(bundle.root)},
        "backend": {"name": backend.name, "version": backend.version(), "threads": threads},
        "environment": environment(), "protocol": protocol, "init_ns": init_ns,
        "self_check": self_check,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    return {**doc, **run}


def load_results(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        r = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ResultsError(f"cannot read results {p}: {err}; pass a results.json from edge-ee-run") from err
    if not isinstance(r, dict) or r.get("kind") != "edge-ee-results":
        raise ResultsError(f"{p} is not an edge-ee results file")
    missing = [k for k in REQUIRED if k not in r]
    if missing:
        raise ResultsError(f"{p} lacks {missing}; it was not written by edge-ee-run")
    if r["schema_version"] > RESULTS_SCHEMA_VERSION:
        raise SchemaVersionError(f"{p} has results schema {r['schema_version']}, this edge-ee reads "
                                 f"up to {RESULTS_SCHEMA_VERSION}; upgrade edge-ee on the host")
    return r
