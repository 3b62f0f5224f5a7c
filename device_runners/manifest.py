"""The bundle contract: manifest.json schema, checksum verification, input preparation.

A bundle is a folder with `manifest.json`, one graph file per segment and format, and
`golden.npz` (a few real inputs and every segment's expected outputs). The bundle is
closed: the manifest lists the sha256 of every other file (only `manifest.sig`, the
optional signature of the manifest, is exempt); `load_bundle` refuses a bundle with an
unlisted file, a listed name that is absolute, has `..`, resolves outside the folder
(symlinks included) or is not a regular file, a graph or golden file the manifest uses but
does not list, a file whose sha256 differs, or a schema version newer than this runner
understands. Schema checks (types, ranges) are in `schema.py`. The manifest's own sha256
identifies the bundle in results and can be pinned or signed (`signing.py`).
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device_runners.errors import BundleError, ChecksumError, InputSpecError
from device_runners.schema import (
    BUNDLE_SCHEMA_VERSION,
    referenced_files,
    safe_json_loads,
    validate_manifest,
)

__all__ = ["BUNDLE_SCHEMA_VERSION", "MANIFEST", "SIGNATURE", "Bundle", "load_bundle",
           "prepare_input", "sha256_bytes", "sha256_file", "validate_manifest"]

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # detached signature of the manifest digest (edge-ee sign); unlisted
MAX_MANIFEST_BYTES = 64 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    root: Path
    manifest: dict[str, Any]
    manifest_sha256: str

    @property
    def segments(self) -> list[dict[str, Any]]:
        return self.manifest["segments"]

    @property
    def formats(self) -> list[str]:
        graphs = [*self.segments, *self.extra_graphs.values()]
        return sorted(set.intersection(*(set(g["files"]) for g in graphs)))

    @property
    def extra_graphs(self) -> dict[str, dict[str, Any]]:
        """Graphs beside the segments (name → entry with files/inputs/outputs), e.g. the
        segmentation `assemble` graph; older segmentation bundles keep it in their section."""
        graphs = dict(self.manifest.get("graphs") or {})
        legacy = (self.manifest.get("segmentation") or {}).get("assemble")
        if legacy and "assemble" not in graphs:
            graphs["assemble"] = legacy
        return graphs

    @property
    def strategy_graphs(self) -> dict[str, dict[str, Any]]:
        """Execution strategies with a graph of their own (name → entry with files, inputs,
        outputs), e.g. `ingraph` (exits as ONNX `If`); `split` uses the segments."""
        return {k: v for k, v in (self.manifest.get("strategies") or {}).items()
                if isinstance(v, dict) and "files" in v}

    def graph_keys(self, fmt: str | None = None) -> list[int | str]:
        """Every graph a backend opens: segment indices, then extra graph names; with `fmt`
        also the strategy graphs that have a file in that format."""
        keys: list[int | str] = [s["index"] for s in self.segments] + sorted(self.extra_graphs)
        if fmt is not None:
            keys += sorted(k for k, v in self.strategy_graphs.items() if fmt in v["files"])
        return keys

    def graph_entry(self, key: int | str) -> dict[str, Any]:
        if isinstance(key, int):
            return self.segments[key]
        entry = self.extra_graphs.get(key) or self.strategy_graphs.get(key)
        if entry is None:
            raise BundleError(f"this bundle has no graph {key!r}; it has {self.graph_keys()}")
        return entry

    def graph_path(self, key: int | str, fmt: str) -> Path:
        files = self.graph_entry(key)["files"]
        if fmt not in files:
            raise BundleError(f"graph {key!r} has no {fmt!r} file; this bundle carries "
                              f"{self.formats} — choose one of those or re-export with {fmt}")
        return self.root / files[fmt]

    def segment_path(self, index: int, fmt: str) -> Path:
        return self.graph_path(index, fmt)

    def golden(self) -> dict[str, np.ndarray]:
        g = self.manifest.get("golden")
        if not g:
            raise BundleError("bundle has no golden I/O; re-export it to enable the self-check")
        try:
            with np.load(self.root / g["file"], allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise BundleError(f"golden file {g['file']!r} cannot be read ({err}); re-export "
                              "the bundle") from err


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle: schema, closed file list, then the sha256 of every file.

    `verify=False` skips only the hashing; names and the file list are always checked.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle (not a folder); pass the bundle folder "
                          "edge-ee export wrote")
    mpath = root / MANIFEST
    raw = _read_regular(root, MANIFEST, MAX_MANIFEST_BYTES)
    m = safe_json_loads(raw, BundleError, str(mpath))
    validate_manifest(m, str(mpath))
    files = m["files"]
    for name in files:
        _inside(root, name)
    unlisted = {n: w for n, w in referenced_files(m).items() if n not in files}
    if unlisted:
        name, where = next(iter(unlisted.items()))
        raise BundleError(f"{mpath}: {where} names {name!r}, which 'files' does not list (no "
                          "checksum covers it); re-export the bundle with edge-ee")
    extra = sorted(_all_files(root) - set(files) - {MANIFEST, SIGNATURE})
    if extra:
        raise BundleError(f"{root} holds files the manifest does not list: {extra[:5]}; a bundle "
                          "is closed — remove them or re-copy the bundle into an empty folder")
    if verify:
        for name, digest in files.items():
            got = sha256_file(root / name)
            if got != digest:
                raise ChecksumError(
                    f"{root / name}: sha256 {got[:12]}… does not match the manifest's "
                    f"{digest[:12]}…; the file was changed or damaged in transfer — re-copy the "
                    "bundle")
    return Bundle(root, m, sha256_bytes(raw))


def _inside(root: Path, name: str) -> Path:
    """The path of a listed name, refusing anything that is not a plain file inside `root`."""
    p = Path(name)
    if (not name or "\\" in name or "\x00" in name or p.is_absolute() or name.startswith("/")
            or any(part in ("..", ".", "") for part in name.split("/"))):
        raise BundleError(f"bundle file name {name!r} is not a plain relative name inside the "
                          "bundle (absolute, '..', empty or odd parts); re-export the bundle")
    full = root / p
    try:
        real, base = full.resolve(strict=True), root.resolve(strict=True)
    except (OSError, RuntimeError):
        raise BundleError(f"{full} is listed in the manifest but missing (or a broken link); "
                          "re-copy the bundle") from None
    if base not in real.parents:
        raise BundleError(f"bundle file {name!r} resolves outside the bundle folder (a symbolic "
                          "link?); a bundle may only use its own files — re-copy it without links")
    if not stat.S_ISREG(os.stat(real).st_mode):
        raise BundleError(f"bundle file {name!r} is not a regular file; re-copy the bundle")
    return full


def _read_regular(root: Path, name: str, limit: int) -> bytes:
    full = root / name
    try:
        st = os.lstat(full)
    except OSError:
        raise BundleError(f"{root} is not a bundle: no {name}; pass the folder edge-ee export "
                          "wrote") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{full} is not a regular file (a link or a folder); re-copy the bundle")
    if st.st_size > limit:
        raise BundleError(f"{full} is {st.st_size} bytes, too large for a manifest; re-copy the bundle")
    try:
        return full.read_bytes()
    except OSError as err:
        raise BundleError(f"cannot read {full}: {err}; check its permissions") from err


def _all_files(root: Path) -> set[str]:
    """Every entry under `root` (links not followed) as a relative name; folders only
    count when they hold nothing listed (checked by the caller through their files)."""
    out: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = Path(dirpath).relative_to(root)
        for d in list(dirnames):
            if (Path(dirpath) / d).is_symlink():
                out.add((rel / d).as_posix())
                dirnames.remove(d)
        if rel != Path(".") and not filenames and not dirnames:
            out.add(rel.as_posix() + "/")
        out.update((rel / f).as_posix() for f in filenames)
    return out


def prepare_input(bundle: Bundle, x: np.ndarray) -> np.ndarray:
    """Check an input batch against the manifest and normalise raw images.

    Accepts the model's own input (float32, the manifest's layout, e.g. NCHW) or raw
    images as the manifest's `raw` spec describes (uint8 NHWC), which are scaled and
    normalised with the manifest's constants.
    """
    spec = bundle.manifest["input"]
    shape = tuple(spec["shape"][1:])
    raw = spec.get("raw")
    if x.dtype == np.float32 and tuple(x.shape[1:]) == shape:
        return np.ascontiguousarray(x)
    if raw and x.dtype == np.dtype(raw["dtype"]) and tuple(x.shape[1:]) == tuple(raw["shape"][1:]):
        y = x.astype(np.float32) * np.float32(raw["scale"])
        y = (y - np.asarray(raw["mean"], np.float32)) / np.asarray(raw["std"], np.float32)
        if raw.get("layout") == "NHWC" and spec.get("layout") == "NCHW":
            y = y.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(y, dtype=np.float32)
    want = f"float32 {('N', *shape)}"
    if raw:
        want += f" or {raw['dtype']} {('N', *raw['shape'][1:])} ({raw.get('layout', '')} raw images)"
    raise InputSpecError(
        f"input has dtype {x.dtype} and shape {x.shape}, the bundle expects {want}; "
        "convert the input or pass images in one of those forms"
    )
