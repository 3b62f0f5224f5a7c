"""The run result (device → host contract): raw, schema-versioned, written atomically.

No statistics are computed here; `edge-ee report` does that on the host. Samples are
stored column-wise (one list per field) to keep files small. The file is strict JSON:
NaN and infinities are written as null (`json_safe` counts them), and `load_results`
checks every field the report reads (`schema.validate_results`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from device_runners import __version__
from device_runners.errors import ResultsError
from device_runners.files import atomic_file
from device_runners.protocol import peak_rss_kib
from device_runners.schema import (
    MAX_DOCUMENT_BYTES,
    RESULTS_SCHEMA_VERSION,
    safe_json_loads,
    validate_results,
)

__all__ = ["RESULTS_SCHEMA_VERSION", "atomic_write_json", "check_output_path", "environment",
           "json_safe", "load_results", "peak_rss_process", "results_document", "spool_path",
           "validate_results", "write_results"]


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
        **peak_rss_process(),
    }
    return {**doc, **run}


def peak_rss_process() -> dict[str, Any]:
    """`peak_rss_kib` and whose it is (`peak_rss_process`): the peak RSS of the process the
    runner ran in, read by `protocol.peak_rss_kib` (`source`: VmHWM, or ru_maxrss off
    Linux). `torch_loaded` is true when a host program called the runner in-process, so
    the figure includes torch and is not the runner's own."""
    kib, source = peak_rss_kib()
    return {"peak_rss_kib": kib,
            "peak_rss_process": {"pid": os.getpid(), "source": source, "torch_loaded":
                                 "torch" in sys.modules,
                                 "argv0": Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""}}


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON (NaN/inf written as null, numpy values as Python ones) through
    `files.atomic_file`: a temporary file in the same folder, fsync, then a rename."""
    clean, _ = json_safe(obj)
    with atomic_file(path, "w") as f:
        json.dump(clean, f, indent=1, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def json_safe(obj: Any) -> tuple[Any, int]:
    """`obj` ready for strict JSON: numpy values as Python ones, NaN/inf as None; also
    returns how many non-finite numbers were replaced. Lists and dicts are cleaned in
    place (no second copy of a long run's samples); tuples and arrays become lists."""
    count = 0

    def clean(o: Any) -> Any:
        nonlocal count
        if isinstance(o, float):
            if math.isfinite(o):
                return o
            count += 1
            return None
        if isinstance(o, (str, int, bool)) or o is None:
            return o
        if isinstance(o, list):
            for i, v in enumerate(o):
                if not (type(v) is int or type(v) is str or v is None):  # fast path
                    o[i] = clean(v)
            return o
        if isinstance(o, dict):
            if all(isinstance(k, str) for k in o):
                for k, v in o.items():
                    o[k] = clean(v)
                return o
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, tuple):
            return clean(list(o))
        if isinstance(o, np.ndarray):
            return clean(o.tolist())
        if isinstance(o, np.generic):
            return clean(o.item())
        if isinstance(o, Path):
            return str(o)
        raise ResultsError(f"cannot write a {type(o).__name__} into JSON; this is a bug — "
                           "please report it")

    return clean(obj), count


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and check a results.json (types, ranges, finiteness) before anything uses it."""
    p = Path(path)
    try:
        if not p.is_file():
            raise ResultsError(f"results {p} is not a file; pass a results.json from edge-ee-run")
        if p.stat().st_size > MAX_DOCUMENT_BYTES:
            raise ResultsError(f"results {p} is larger than {MAX_DOCUMENT_BYTES} bytes; it was "
                               "not written by edge-ee-run")
        raw = p.read_bytes()
    except OSError as err:
        raise ResultsError(f"cannot read results {p}: {err}; pass a results.json from edge-ee-run") from err
    r = safe_json_loads(raw, ResultsError, str(p))
    validate_results(r, str(p))
    return r


def check_output_path(path: str | Path, flag: str = "--out") -> Path:
    """Before measuring: the results file can be written (parent is an existing, writable
    folder; the target is not a folder). Raises `ResultsError` naming `flag`."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise ResultsError(f"{flag} {p} is a folder; pass a file name such as {p / 'results.json'}")
    if p.exists() and not p.is_file():
        raise ResultsError(f"{flag} {p} exists and is not a regular file; choose another name")
    if not parent.exists():
        raise ResultsError(f"{flag} {p}: folder {parent} does not exist; create it first "
                           f"(mkdir -p {parent})")
    if not parent.is_dir():
        raise ResultsError(f"{flag} {p}: {parent} is not a folder; choose another path")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{p.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ResultsError(f"{flag} {p}: cannot write in {parent} ({err.strerror}); choose a "
                           "writable folder") from err
    return p


def spool_path(out: str | Path) -> Path:
    """Where the sample spool of a run writing `out` lives (beside it, hidden)."""
    p = Path(out)
    return p.with_name(f".{p.name}.spool")


def write_results(out: str | Path, doc: dict[str, Any], spool: Any = None) -> Path:
    """Final write that never loses the run: the samples go to a spool beside `out` first
    (`spool.Spool`), then results.json is written atomically with SIGINT/SIGTERM/SIGHUP
    held back; the spool is removed only after the rename. When the write fails the spool
    stays and the `ResultsError` says where and how to recover it.

    `spool`: the `Spool` the executor appended every unit to during the run (at
    `spool_path(out)`); its rows are already on disk, only the header is added, and the
    samples are streamed from it into results.json column by column, so memory stays
    bounded however long the run (`doc["samples"]` is ignored). Without it,
    `doc["samples"]` is spooled here."""
    import signal

    from device_runners.spool import Spool

    fresh = spool is None
    spool = Spool(spool_path(out)) if fresh else spool
    try:
        header = {k: v for k, v in json_safe(doc)[0].items() if k != "samples"}
        if fresh:
            spool.set_meta(header)  # first, so a cut spool still says what was run
            spool.extend(doc.get("samples") or {})
        spool.set_meta(header)  # after the rows: the spool is whole
        spool.close()
    except ResultsError:  # a full disk: still try the results file itself
        with contextlib.suppress(ResultsError, OSError):
            spool.close()
    signals = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        if fresh:
            validate_results(doc, str(out))  # the writer checks the contract the report reads
            atomic_write_json(out, doc)
        else:
            _write_streamed(out, header, spool)
    except (OSError, ResultsError) as err:
        raise ResultsError(
            f"cannot write {out}: {err}; the measured samples are kept in {spool.path} — free "
            f"space, then recover: python -m device_runners.spool {spool.path} {out}") from err
    finally:
        for s in signals:  # a signal during the write: the run is already complete and saved
            if s in signal.sigpending():
                signal.signal(s, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    spool.discard()
    return Path(out)


def _write_streamed(out: str | Path, header: dict[str, Any], spool: Any) -> None:
    """results.json = the header + "samples" streamed from the spool (checked first on the
    header and the spool's first chunk, then for equal column lengths)."""
    from device_runners.spool import iter_chunks, write_json_columns

    first = next(iter_chunks(spool.path), {})
    validate_results({**header, "samples": first}, str(out))
    names = list(first)
    body = json.dumps(header, indent=1, allow_nan=False)
    with atomic_file(out, "w") as f:
        f.write(body[: body.rindex("}")].rstrip() + ',\n "samples": ')
        write_json_columns(f, spool.path, names)
        f.write("\n}\n")
        f.flush()
        os.fsync(f.fileno())
