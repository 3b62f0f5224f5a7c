"""The keep file: which training samples a pruning method kept, with scores and provenance.

A JSON document (schema `edge-ee-keep/1`) written atomically (temporary file + rename):
`kept` and `discarded` indices, the per-sample `scores` (higher = more worth keeping),
and provenance — scorer, ratio, seed, epochs, model, exit, and the sha256 of the data
the scores were computed on. Training code uses it directly:

    keep = read_keep_file("keep.json")
    subset = keep.subset(train_dataset)          # torch.utils.data.Subset
    sampler = keep.sampler(train_dataset)        # SubsetRandomSampler over kept indices

Both check the data first: applying a keep file to data whose sha256 differs (another
split, another order, another subset) raises `KeepFileError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_ee.data import ImageSplit
from edge_ee.errors import DataError

SCHEMA = "edge-ee-keep/1"


class KeepFileError(DataError):
    """A keep file is unreadable, malformed, or belongs to different data."""


def dataset_sha256(data: Any) -> str:
    """sha256 of a dataset's content and order.

    `ImageSplit`: its uint8 images and int64 labels (with shapes). Any other indexable
    torch-style dataset: every item's tensors/arrays in order (slower; pass the digest
    to `KeepFile.subset` if you already know it).
    """
    h = hashlib.sha256()
    if isinstance(data, ImageSplit):
        for arr in (np.ascontiguousarray(data.images), np.ascontiguousarray(data.labels)):
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(memoryview(arr).cast("B"))
        return h.hexdigest()
    for i in range(len(data)):
        item = data[i]
        for part in item if isinstance(item, (tuple, list)) else (item,):
            arr = np.ascontiguousarray(part.numpy() if hasattr(part, "numpy") else np.asarray(part))
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


@dataclass(frozen=True)
class KeepFile:
    """Kept/discarded indices of one pruning run, with scores and provenance."""

    kept: np.ndarray
    scores: np.ndarray
    data_sha256: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def discarded(self) -> np.ndarray:
        mask = np.ones(self.n, bool)
        mask[self.kept] = False
        return np.flatnonzero(mask)

    @property
    def keep_mask(self) -> np.ndarray:
        mask = np.zeros(self.n, bool)
        mask[self.kept] = True
        return mask

    def check(self, data: Any, data_sha256: str | None = None) -> None:
        """Raise `KeepFileError` unless `data` is the data this file was made from."""
        if len(data) != self.n:
            raise KeepFileError(f"keep file covers {self.n} samples but the data has {len(data)}; "
                                "apply it to the same training split it was scored on")
        got = data_sha256 or dataset_sha256(data)
        if got != self.data_sha256:
            raise KeepFileError(f"data sha256 {got[:12]}… does not match the keep file's "
                                f"{self.data_sha256[:12]}…; the keep file was made from other data "
                                "(another split, subset or order): re-score this data")

    def subset(self, data: Any, data_sha256: str | None = None):
        """`torch.utils.data.Subset` of the kept samples (an `ImageSplit` for an ImageSplit)."""
        self.check(data, data_sha256)
        if isinstance(data, ImageSplit):
            return data.subset(np.sort(self.kept))
        from torch.utils.data import Subset

        return Subset(data, np.sort(self.kept).tolist())

    def discarded_subset(self, data: Any, data_sha256: str | None = None):
        """The discarded set D_p (same type as `subset`)."""
        self.check(data, data_sha256)
        if isinstance(data, ImageSplit):
            return data.subset(self.discarded)
        from torch.utils.data import Subset

        return Subset(data, self.discarded.tolist())

    def sampler(self, data: Any, seed: int = 0, data_sha256: str | None = None):
        """A seeded `SubsetRandomSampler` over the kept indices, for a `DataLoader`."""
        import torch
        from torch.utils.data import SubsetRandomSampler

        self.check(data, data_sha256)
        gen = torch.Generator().manual_seed(seed)
        return SubsetRandomSampler(np.sort(self.kept).tolist(), generator=gen)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "n": self.n, "data_sha256": self.data_sha256,
                "provenance": self.provenance, "kept": np.sort(self.kept).tolist(),
                "discarded": self.discarded.tolist(),
                "scores": [round(float(s), 6) for s in self.scores]}


def write_keep_file(keep: KeepFile, path: str | Path) -> Path:
    """Write atomically (temporary file in the same folder, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(keep.to_json(), f)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def read_keep_file(path: str | Path) -> KeepFile:
    p = Path(path)
    if not p.is_file():
        raise KeepFileError(f"keep file {p} not found; write one with `edge-ee prune-data`")
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise KeepFileError(f"keep file {p} is not readable JSON ({err}); re-create it") from err
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise KeepFileError(f"{p} is not an edge-ee keep file (schema {SCHEMA} expected)")
    try:
        n = int(doc["n"])
        kept = np.asarray(doc["kept"], np.int64)
        scores = np.asarray(doc["scores"], np.float64)
        sha = str(doc["data_sha256"])
    except (KeyError, TypeError, ValueError) as err:
        raise KeepFileError(f"keep file {p} is missing or has a malformed field ({err})") from err
    if len(scores) != n or (kept.size and (kept.min() < 0 or kept.max() >= n)) or \
            len(np.unique(kept)) != len(kept):
        raise KeepFileError(f"keep file {p} is inconsistent (indices out of 0..{n - 1}, repeated, "
                            "or scores of the wrong length); re-create it")
    return KeepFile(kept, scores, sha, dict(doc.get("provenance") or {}))


def provenance_dict(**kw: Any) -> dict[str, Any]:
    """Provenance values made JSON-safe (dataclasses → dicts, tuples → lists)."""
    out = {}
    for k, v in kw.items():
        if hasattr(v, "__dataclass_fields__"):
            v = asdict(v)
        out[k] = list(v) if isinstance(v, tuple) else v
    return out
