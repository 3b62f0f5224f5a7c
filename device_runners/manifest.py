"""The bundle contract: manifest.json schema, checksum verification, input preparation.

A bundle is a folder with `manifest.json`, one graph file per segment and format, and
`golden.npz` (a few real inputs and every segment's expected outputs). The manifest
lists the sha256 of every other file; `load_bundle` refuses a bundle whose files do not
match, or whose schema version is newer than this runner understands.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device_runners.errors import BundleError, ChecksumError, InputSpecError, SchemaVersionError

BUNDLE_SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_KEYS = ("schema_version", "kind", "model", "input", "classes", "segments", "files")
SEGMENT_KEYS = ("index", "name", "files", "inputs", "outputs", "flops", "exit")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate_manifest(m: Any, where: str = MANIFEST) -> None:
    """Structural checks shared by the writer (host) and the reader (device)."""
    if not isinstance(m, dict):
        raise BundleError(f"{where} is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise BundleError(f"{where} lacks {missing}; re-export the bundle with edge-ee export")
    if m.get("kind") != "edge-ee-bundle":
        raise BundleError(f"{where}: kind is {m.get('kind')!r}, not 'edge-ee-bundle'")
    v = m["schema_version"]
    if not isinstance(v, int) or v < 1:
        raise BundleError(f"{where}: schema_version {v!r} is not a positive integer")
    if v > BUNDLE_SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} has schema version {v}, this runner reads up to {BUNDLE_SCHEMA_VERSION}; "
            "upgrade edge-ee on the device (or re-pack the runner with edge-ee pack-runner)"
        )
    segs = m["segments"]
    if not isinstance(segs, list) or not segs:
        raise BundleError(f"{where}: 'segments' must be a non-empty list")
    for i, s in enumerate(segs):
        lack = [k for k in SEGMENT_KEYS if k not in s]
        if lack:
            raise BundleError(f"{where}: segment {i} lacks {lack}")
        if s["index"] != i:
            raise BundleError(f"{where}: segment {i} has index {s['index']}; segments out of order")
    if segs[-1]["exit"].get("kind") != "final":
        raise BundleError(f"{where}: the last segment must end with the final classifier")


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

    def graph_keys(self) -> list[int | str]:
        """Every graph a backend opens: segment indices, then extra graph names."""
        return [s["index"] for s in self.segments] + sorted(self.extra_graphs)

    def graph_entry(self, key: int | str) -> dict[str, Any]:
        if isinstance(key, int):
            return self.segments[key]
        try:
            return self.extra_graphs[key]
        except KeyError:
            raise BundleError(f"this bundle has no graph {key!r}; it has {self.graph_keys()}") from None

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
        with np.load(self.root / g["file"], allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle: schema, then the sha256 of every listed file."""
    root = Path(path)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root} is not a bundle: no {MANIFEST}; pass the folder edge-ee export wrote")
    raw = mpath.read_bytes()
    try:
        m = json.loads(raw)
    except json.JSONDecodeError as err:
        raise BundleError(f"{mpath} is not valid JSON ({err}); re-copy the bundle") from err
    validate_manifest(m, str(mpath))
    if verify:
        for name, digest in m["files"].items():
            f = root / name
            if not f.is_file():
                raise BundleError(f"{f} is listed in the manifest but missing; re-copy the bundle")
            got = sha256_file(f)
            if got != digest:
                raise ChecksumError(
                    f"{f}: sha256 {got[:12]}… does not match the manifest's {digest[:12]}…; the "
                    "file was changed or damaged in transfer — re-copy the bundle"
                )
    return Bundle(root, m, sha256_bytes(raw))


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
