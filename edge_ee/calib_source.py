"""Calibration data the backbone has not seen: reading it, checking it, describing it.

A calibration set for certified thresholds (METHODS §6) must not overlap the statistics
data (the training split). This module reads a calibration set given as an `.npz`
(`x`: uint8 NHWC images, `y`: labels, optional `classes`: class names — the same file
`edge-ee-run --input` takes; the statistics data may also be a streamed image folder,
hashed chunk by chunk), draws a class-balanced random subset, checks it against the
model's classes and, by per-sample hash, against the statistics data, and records where
calibration came from (`source_record`, the manifest's `calibration.source`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge_ee.data import ImageSplit
from edge_ee.errors import DataError

log = logging.getLogger(__name__)

TRAIN_HOLDOUT_WARNING = (
    "thresholds are calibrated on a held-out part of the TRAINING split, which the backbone "
    "has already fitted: every exit looks more reliable there than on new data, so the "
    "accuracy drop on new data can exceed --max-drop and no certificate is valid for it. "
    "Pass --calib-data with labelled samples the backbone was not trained on.")


def read_calib_npz(path: str | Path, like: ImageSplit) -> ImageSplit:
    """Calibration samples from an .npz (`x` uint8 (N, H, W, C) or (N, H, W), `y` labels)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"--calib-data {p}: no such file; pass an .npz with 'x' (uint8 NHWC "
                        "images) and 'y' (labels), 'test', or a dataset of the model's kind")
    try:
        with np.load(p, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise DataError(f"--calib-data {p}: needs arrays 'x' (images) and 'y' (labels); "
                                f"found {sorted(z.files)}")
            x, y = z["x"], z["y"]
            classes = tuple(str(c) for c in z["classes"]) if "classes" in z else None
    except (OSError, ValueError) as err:
        raise DataError(f"--calib-data {p}: cannot read it ({err}); pass an .npz file") from err
    if x.dtype != np.uint8:
        raise DataError(f"--calib-data {p}: 'x' must be uint8 raw images (as the training data), "
                        f"got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    want = raw_shape(like)
    if x.shape[1:] != want:
        raise DataError(f"--calib-data {p}: images of shape {x.shape[1:]}, the model takes "
                        f"{want} (H, W, C); resize them first")
    if len(x) != len(y):
        raise DataError(f"--calib-data {p}: {len(x)} images but {len(y)} labels")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"--calib-data {p}: labels 'y' must be integers, got {y.dtype}")
    if classes is not None and classes != tuple(like.classes):
        extra = sorted(set(classes) - set(like.classes))
        raise DataError(f"--calib-data {p}: its classes {list(classes)} are not the model's "
                        f"{list(like.classes)}" + (f" (the model lacks {extra})" if extra else "")
                        + "; relabel the calibration set in the model's class order")
    return ImageSplit(x, y.astype(np.int64), like.classes, like.mean, like.std)


def raw_shape(data: Any) -> tuple[int, ...]:
    """(H, W, C) of a split's raw uint8 images (an ImageSplit, or an image folder)."""
    if isinstance(data, ImageSplit):
        return tuple(data.images.shape[1:])
    return tuple(next(data.raw_chunks(1)).shape[1:])


def _chunks(data: Any) -> Iterator[np.ndarray]:
    """The raw images in order: an ImageSplit's array, or a streamed split's chunks."""
    if isinstance(data, ImageSplit):
        yield data.images
    else:
        yield from data.raw_chunks()


def check_classes(calib: ImageSplit, num_classes: int, where: str = "--calib-data") -> None:
    """Every calibration label must be one of the model's classes."""
    bad = np.unique(calib.labels[(calib.labels < 0) | (calib.labels >= num_classes)])
    if bad.size:
        raise DataError(f"{where}: labels {bad[:10].tolist()} are classes the model lacks (it has "
                        f"{num_classes}: 0..{num_classes - 1}); drop those samples or relabel them")


def balanced_subset(data: ImageSplit, n: int, seed: int = 0) -> tuple[ImageSplit, np.ndarray]:
    """A seeded class-balanced random subset of `n` samples (and its indices)."""
    if n >= len(data):
        return data, np.arange(len(data))
    if n < 1:
        raise DataError(f"--calib-samples must be ≥ 1, got {n}")
    from sklearn.model_selection import train_test_split
    counts = np.bincount(data.labels)
    strat = data.labels if n >= np.count_nonzero(counts) and counts[counts > 0].min() >= 2 else None
    idx, _ = train_test_split(np.arange(len(data)), train_size=n, random_state=seed,
                              stratify=strat)
    idx = np.sort(idx)
    return data.subset(idx), idx


def sample_hashes(data: ImageSplit) -> np.ndarray:
    """One 16-byte BLAKE2b digest per image (labels excluded: the same image is the same sample)."""
    out = [hashlib.blake2b(r.tobytes(), digest_size=16).digest()
           for chunk in _chunks(data) for r in chunk.reshape(len(chunk), -1)]
    return np.array(out, dtype="S16")


def check_disjoint(calib: ImageSplit, stats: ImageSplit) -> None:
    """The calibration set must share no image with the statistics (training) data."""
    shared = np.isin(sample_hashes(calib), sample_hashes(stats))
    k = int(shared.sum())
    if k == len(calib) and len(calib) == len(stats):
        raise DataError("--calib-data is identical to the statistics (training) data; a "
                        "certificate needs samples the backbone was not trained on — pass "
                        "held-out labelled data (e.g. --calib-data test)")
    if k:
        raise DataError(f"--calib-data: {k} of {len(calib)} calibration samples are also in the "
                        "statistics (training) data (same image bytes); remove them — a "
                        "certificate needs samples the backbone was not trained on")


def without(data: ImageSplit, remove: ImageSplit) -> tuple[ImageSplit, int]:
    """`data` minus every sample whose image is also in `remove` (and how many were dropped)."""
    keep = ~np.isin(sample_hashes(data), sample_hashes(remove))
    return data.subset(np.flatnonzero(keep)), int((~keep).sum())


def data_sha256(data: ImageSplit) -> str:
    """sha256 over the images and labels, in order: which samples calibrated the bundle."""
    h = hashlib.sha256()
    for chunk in _chunks(data):
        h.update(np.ascontiguousarray(chunk).tobytes())
    h.update(np.ascontiguousarray(data.labels, np.int64).tobytes())
    return h.hexdigest()


def source_record(kind: str, data: ImageSplit, warning: str | None = None) -> dict:
    """The manifest's `calibration.source`: {kind, n, sha256, warning}."""
    if kind not in ("calib-data", "train-holdout"):
        raise ValueError(kind)
    return {"kind": kind, "n": len(data), "sha256": data_sha256(data), "warning": warning}
