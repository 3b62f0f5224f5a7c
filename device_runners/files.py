"""Atomic file writes: the one place a file is written through a temporary sibling + rename.

Every writer of the project (manifest, golden arrays, results, reports, cached datasets,
weights, the packed runner) goes through `atomic_file`: the data is written to a temporary
file in the destination folder, flushed, given the usual permissions (0666 minus the
umask, not mkstemp's 0600) and renamed over the destination, so a reader never sees half
a file and a failure leaves the old file untouched. Folders are replaced as a whole by
`converters.atomic.atomic_dir`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb", executable: bool = False) -> Iterator[IO[Any]]:
    """Yield a file open for writing (`mode` "wb" or "w"); on success it replaces `path`.

    `executable`: give the file the executable bits too (0777 minus the umask)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, (0o777 if executable else 0o666) & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", executable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` for libraries that write by file name
    (torch.save, zipapp); on success it replaces `path`. `suffix` keeps an extension the
    library may require."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, (0o777 if executable else 0o666) & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_default(o: Any) -> Any:
    """JSON for numpy scalars and arrays; anything else is an error."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot serialise {type(o).__name__}")


def atomic_write_json(path: str | Path, obj: Any, default: Any = json_default) -> Path:
    """Write `obj` as indented JSON (numpy values allowed) to `path` atomically."""
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=1, default=default)
        f.write("\n")
    return Path(path)


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """Write arrays as an uncompressed .npz to `path` atomically."""
    with atomic_file(path, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)
