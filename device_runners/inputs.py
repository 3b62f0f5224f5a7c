"""Input files for `edge-ee-run`: an `.npz` with images `x` and optional labels `y`, or an
image folder (`<class>/<image>`, decoded by `device_runners.images` with the bundle's own
recorded resize/crop; Pillow needed).

Everything about a user's input file that can be wrong becomes an `InputSpecError` that
says how to fix it, before any array is loaded: not a file, a plain `.npy` instead of an
`.npz`, a truncated or damaged archive, a header that declares more data than the member
holds (or than this machine has memory), object arrays (pickles are never loaded), no
samples, labels that are not integers (NaN, strings), of the wrong rank or length, or out
of range. Inputs that are not finite are not run: they are counted and listed so the
report never mixes them into accuracy (`drop_nonfinite`).

Used by the classification runner (`load_input`) and, through `read_arrays` and
`check_count`, by the segmentation runner.
"""

from __future__ import annotations

import logging
import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from device_runners.errors import InputSpecError

log = logging.getLogger(__name__)

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"
FIX = "save inputs with np.savez(path, x=images, y=labels)"


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def _header(zf: zipfile.ZipFile, member: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a member's .npy header, checked against its real size."""
    info = zf.getinfo(member)
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, EOFError, OSError, SyntaxError, zlib.error) as err:
            raise InputSpecError(f"{path}: array {member!r} has a damaged header ({err}); "
                                 f"{FIX}") from err
    if dtype.hasobject:
        raise InputSpecError(f"{path}: array {member!r} holds Python objects (dtype {dtype}); "
                             "pickled data is never loaded — store numbers only")
    count = 1
    for d in shape:
        count *= int(d)
    nbytes = count * dtype.itemsize
    if nbytes > info.file_size:
        raise InputSpecError(f"{path}: array {member!r} declares shape {shape} ({nbytes} bytes) "
                             f"but holds only {info.file_size} bytes; the file is truncated or "
                             f"forged — re-create it ({FIX})")
    if nbytes > _memory_bytes() // 2:
        raise InputSpecError(f"{path}: array {member!r} of shape {shape} needs {nbytes} bytes, "
                             "more than half of this machine's memory; split it into smaller "
                             "files or pass --limit")
    return tuple(int(d) for d in shape), dtype


def read_arrays(path: str | Path, names: Sequence[tuple[str, str]] = (("x", "y"),)
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Images and optional labels from an `.npz`; `names` lists accepted (x, y) key pairs."""
    p = Path(path)
    try:
        if not p.is_file():
            raise InputSpecError(f"input {p} is not a file; {FIX} and pass its path to --input")
        with open(p, "rb") as fh:
            magic = fh.read(6)
    except OSError as err:
        raise InputSpecError(f"cannot read input {p}: {err}; check the path and permissions") from err
    if magic.startswith(NPY_MAGIC):
        raise InputSpecError(f"{p} is a plain .npy array; the runner reads an .npz with "
                             f"named arrays: {FIX}")
    if not magic.startswith(ZIP_MAGIC):
        raise InputSpecError(f"{p} is not an .npz archive; {FIX}")
    try:
        with zipfile.ZipFile(p) as zf:
            members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
            pair = next(((kx, ky) for kx, ky in names if kx in members), None)
            if pair is None:
                want = " or ".join(repr(kx) for kx, _ in names)
                raise InputSpecError(f"{p} has no array {want} (it has {sorted(members)}); {FIX}")
            kx, ky = pair
            arrays: dict[str, Any] = {}
            for key in (kx, ky):
                if key in members:
                    _header(zf, members[key], p)
            with np.load(p, allow_pickle=False) as z:
                for key in (kx, ky):
                    if key in members:
                        arrays[key] = z[key]
    except InputSpecError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
            NotImplementedError, RuntimeError) as err:
        raise InputSpecError(f"cannot read {p}: {err}; the archive is damaged or truncated — "
                             f"re-create it ({FIX})") from err
    return arrays[kx], arrays.get(ky)


def check_count(x: np.ndarray, path: Any) -> None:
    """At least one sample, of a numeric dtype, with a batch axis."""
    if x.ndim < 1 or x.dtype.kind not in "biuf":
        raise InputSpecError(f"inputs in {path} have dtype {x.dtype} and shape {x.shape}; "
                             "pass numeric images with the sample axis first")
    if len(x) == 0:
        raise InputSpecError(f"{path} holds zero samples; pass at least one image")


def check_labels(y: np.ndarray, count: int, num_classes: int, path: Any,
                 rank: int = 1, void: int | None = None) -> np.ndarray:
    """Integer labels of rank `rank`, one per sample, in 0..num_classes-1 (or `void`)."""
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise InputSpecError(f"labels in {path} contain NaN or inf; every label must be a "
                                 "class index (drop unlabelled samples or leave out 'y')")
        if not (y == np.round(y)).all():
            raise InputSpecError(f"labels in {path} are fractional; labels are class indices")
        if y.size and np.abs(y).max() > 2**53:
            raise InputSpecError(f"labels in {path} hold values beyond any class index; labels "
                                 f"must be in 0..{num_classes - 1}")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iub":
        raise InputSpecError(f"labels in {path} have dtype {y.dtype}; labels must be integer "
                             "class indices, not strings or objects")
    if y.ndim != rank:
        raise InputSpecError(f"labels in {path} have shape {y.shape}; expected {rank} "
                             f"dimension(s) with one entry per sample")
    if len(y) != count:
        raise InputSpecError(f"{count} inputs but {len(y)} labels in {path}; pass one label "
                             "per input")
    if y.size:
        ok = (y >= 0) & (y < num_classes)
        if void is not None:
            ok |= y == void
        if not ok.all():
            raise InputSpecError(f"labels in {path} contain {np.unique(y[~ok])[:10].tolist()}; "
                                 f"they must be in 0..{num_classes - 1}"
                                 + (f" or the void value {void}" if void is not None else "")
                                 + " — remap them")
    return y.astype(np.int64, copy=False)


def drop_nonfinite(x: np.ndarray, y: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Remove samples with NaN/inf values; returns what was dropped (count and indices)."""
    if x.dtype.kind != "f":
        return x, y, {"count": 0, "indices": []}
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    idx = np.flatnonzero(bad)
    if idx.size:
        log.warning("%d input samples hold NaN/inf and are not run (first: %s)",
                    idx.size, idx[:10].tolist())
        x = x[~bad]
        y = None if y is None else y[~bad]
    return x, y, {"count": int(idx.size), "indices": idx[:1000].tolist()}


def _read_folder(bundle: Any, path: Path, limit: int | None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """An image folder as the bundle's raw images, preprocessed as the manifest records."""
    from device_runners.images import read_folder
    raw = bundle.manifest["input"].get("raw")
    if not raw or raw.get("dtype") != "uint8" or len(raw.get("shape", ())) != 4:
        raise InputSpecError(f"--input {path} is an image folder, but this bundle records no raw "
                             "image preprocessing (manifest input.raw); pass an .npz of model "
                             "inputs instead")
    return read_folder(path, raw, bundle.manifest["classes"], limit)


def load_input(bundle: Any, path: Path | None, limit: int | None
               ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Any task's input: model-ready float32 batch, labels (checked by the task's recorder)
    or None, and the non-finite samples that were left out (`{"count", "indices"}`).
    The .npz holds `x`/`y`, or a split's `x_test`/`y_test` (e.g. the CamVid file)."""
    from device_runners.manifest import prepare_input
    from device_runners.recorders import recorder_for

    if path is None:
        x, y = bundle.golden()["input"], None
    elif Path(path).is_dir():
        x, y = _read_folder(bundle, Path(path), limit)
    else:
        x, y = read_arrays(path, (("x", "y"), ("x_test", "y_test")))
    where = path or "the bundle's golden inputs"
    check_count(x, where)
    if limit is not None:
        x = x[:limit]
        y = None if y is None else y[:limit]
    if y is not None:
        y = recorder_for(bundle).check_labels(bundle, y, len(x))
    x, y, dropped = drop_nonfinite(x, y)
    if len(x) == 0:
        raise InputSpecError(f"every sample in {where} holds NaN/inf; pass real images")
    return prepare_input(bundle, x), y, dropped
