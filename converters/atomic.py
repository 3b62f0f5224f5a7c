"""Write a folder all at once: build it in a temporary sibling, then rename it into place.

Both bundle writers (classification and segmentation) use `atomic_dir`: on any error the
temporary folder is removed and an existing bundle at the destination stays untouched.
The folder gets the usual permissions (0777 minus the umask), not mkdtemp's 0700, so a
bundle copied to a device can be read by the account that runs it.

Replacing (`--overwrite`) is allowed only for what a bundle writer may own:
`check_replaceable` refuses a file, a link, or a folder that is neither empty nor an
edge-ee bundle (a `manifest.json` of kind `edge-ee-bundle`); `atomic_dir` checks again
just before the rename, so a folder that changed meanwhile is not deleted either.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from device_runners.errors import BundleError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_bundle_dir(path: str | Path) -> bool:
    """True for a folder holding a manifest.json of kind edge-ee-bundle."""
    m = Path(path) / "manifest.json"
    try:
        if m.is_symlink() or not m.is_file() or m.stat().st_size > 64 << 20:
            return False
        return json.loads(m.read_bytes()).get("kind") == "edge-ee-bundle"
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def check_replaceable(out: str | Path, overwrite: bool, flag: str = "--overwrite") -> None:
    """Raise `BundleError` unless `out` is absent, or `overwrite` and it is an empty folder
    or an edge-ee bundle. Call it before any work, so a bad --out fails in seconds."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        if out.parent.exists() and not out.parent.is_dir():
            raise BundleError(f"{out}: {out.parent} is not a folder; choose another path")
        return
    if not overwrite:
        raise BundleError(f"{out} exists; pass {flag} (overwrite=True) or choose another folder")
    if out.is_symlink() or not out.is_dir():
        raise BundleError(f"{out} is {'a link' if out.is_symlink() else 'a file'}, not a bundle "
                          f"folder; {flag} replaces only edge-ee bundles or empty folders — "
                          "choose another path")
    if any(out.iterdir()) and not is_bundle_dir(out):
        raise BundleError(f"{out} is a folder that is not an edge-ee bundle (no manifest.json of "
                          f"kind edge-ee-bundle); {flag} replaces only bundles or empty folders — "
                          "choose another path or empty it yourself")


@contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `out`; on success it replaces `out` (which
    must then be an edge-ee bundle or an empty folder, see `check_replaceable`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if out.exists() or out.is_symlink():
            check_replaceable(out, overwrite=True)
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
