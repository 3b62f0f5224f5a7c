"""`edge-ee samples`: the runner's input file (`--input samples.npz`) from data a user has.

Reads a Fashion-MNIST IDX folder, the CIFAR-10 JPEG zip, an `.npz` (`x`/`y`, or a
split's `x_<split>`/`y_<split>` such as the CamVid file), or an image folder
(`DIR/<split>/<class>/<image>` or `DIR/<class>/<image>`; with `--bundle` decoded with the
bundle's recorded resize/crop and class order, exactly as `edge-ee-run --input DIR`),
takes a seeded random subset —
class-balanced when asked, since the loaders return images sorted by class and the first
N would all be one class — and writes `x` (raw uint8 NHWC, which `edge-ee-run`
normalises with the bundle's own recorded preprocessing) and `y` (labels). With
`--bundle` the images are checked against the bundle's raw input spec first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_ee.data import atomic_save_npz, load_cifar10_jpeg, load_fashion_mnist
from edge_ee.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplesConfig:
    """What to sample (CLI flags map 1:1)."""

    data: str
    out: str
    split: str = "test"
    count: int | None = None  # None: the whole split
    balanced: bool = True  # the same number of samples of every class (image labels)
    seed: int = 0
    bundle: str | None = None

    def __post_init__(self) -> None:
        if self.count is not None and self.count < 1:
            raise ConfigError(f"--count must be >= 1, got {self.count}")


def load_source(data: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 images (N, H, W, C) and labels from a folder, zip or npz."""
    p = Path(data)
    if p.is_dir():
        s = load_fashion_mnist(split, p)
        return s.images, s.labels
    if p.suffix == ".zip":
        s = load_cifar10_jpeg(split, p)
        return s.images, s.labels
    if p.suffix == ".npz" and p.is_file():
        try:
            with np.load(p, allow_pickle=False) as z:
                kx, ky = ("x", "y") if "x" in z.files else (f"x_{split}", f"y_{split}")
                if kx not in z.files:
                    raise DataError(f"{p} has neither 'x' nor '{kx}'; arrays found: {z.files}")
                return z[kx], (z[ky] if ky in z.files else None)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read {p}: {err}") from err
    raise DataError(f"{p} is not a Fashion-MNIST IDX folder, a CIFAR-10 JPEG .zip or an .npz; "
                    "pass one of those")


def choose(labels: np.ndarray | None, n_total: int, count: int | None, balanced: bool,
           seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset; per class equal counts when `balanced` and the
    labels are one per image."""
    rng = np.random.default_rng(seed)
    if count is None or count >= n_total:
        return np.arange(n_total)
    if not balanced or labels is None or labels.ndim != 1:
        return np.sort(rng.choice(n_total, count, replace=False))
    classes = np.unique(labels)
    per = count // len(classes)
    if per == 0:
        raise ConfigError(f"--count {count} is fewer than the {len(classes)} classes; ask for "
                          f"at least {len(classes)} or pass --no-balanced")
    picks = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        picks.append(rng.choice(idx, min(per, len(idx)), replace=False))
    return np.sort(np.concatenate(picks))


def check_against_bundle(x: np.ndarray, bundle: str | Path) -> None:
    from device_runners.manifest import load_bundle
    raw = load_bundle(bundle).manifest["input"].get("raw")
    if raw is None:
        return
    want = tuple(raw["shape"][1:])
    if x.dtype != np.dtype(raw["dtype"]) or tuple(x.shape[1:]) != want:
        raise DataError(f"the images are {x.dtype} {x.shape[1:]}, the bundle {bundle} expects "
                        f"{raw['dtype']} {want}; pass the data the bundle was built for")


def image_folder_root(data: str | Path, split: str) -> Path | None:
    """The class-folder root of an image folder: `data/<split>` when it exists, else `data`
    itself when it holds class folders and no Fashion-MNIST IDX files; None otherwise."""
    p = Path(data)
    if not p.is_dir():
        return None
    if (p / split).is_dir():
        return p / split
    if any(c.is_dir() for c in p.iterdir()) and not any(p.glob("*idx*")):
        return p
    return None


def folder_samples(root: Path, cfg: SamplesConfig) -> dict[str, np.ndarray]:
    """Decode only the chosen images of a class folder, with the bundle's recorded resize/crop
    and classes when `--bundle` is given (what `edge-ee-run --input FOLDER` does), else as
    stored (RGB, every image the size of the first)."""
    from device_runners.images import geometry, list_folder, load_image
    raw, classes = None, None
    if cfg.bundle:
        from device_runners.manifest import load_bundle
        m = load_bundle(cfg.bundle).manifest
        raw, classes = m["input"].get("raw"), m["classes"]
    files, labels, _ = list_folder(root, classes, DataError)
    idx = choose(None if (labels < 0).all() else labels, len(files), cfg.count, cfg.balanced,
                 cfg.seed)
    resize, crop = geometry(raw)
    if raw is not None:
        h, w, c = (int(d) for d in raw["shape"][1:])
        hw: tuple[int, int] | None = (h, w)
    else:
        c, hw = 3, None
    first = load_image(files[idx[0]], c, resize, crop, hw, DataError)
    x = np.empty((len(idx), *first.shape), np.uint8)
    for k, i in enumerate(idx):
        x[k] = load_image(files[i], c, resize, crop, first.shape[:2], DataError)
    return {"x": x} if (labels < 0).all() else {"x": x, "y": labels[idx]}


def make_samples(cfg: SamplesConfig) -> Path:
    """Write the samples file; returns its path."""
    root = image_folder_root(cfg.data, cfg.split)
    if root is not None:
        out = Path(cfg.out)
        atomic_save_npz(out, **folder_samples(root, cfg))
        return out
    x, y = load_source(cfg.data, cfg.split)
    if x.ndim == 3:  # (N, H, W) grey → NHWC
        x = x[..., None]
    if cfg.bundle:
        check_against_bundle(x, cfg.bundle)
    idx = choose(y, len(x), cfg.count, cfg.balanced, cfg.seed)
    arrays = {"x": x[idx]} if y is None else {"x": x[idx], "y": y[idx]}
    out = Path(cfg.out)
    atomic_save_npz(out, **arrays)
    log.debug("wrote %s: %d samples of %s (%s)", out, len(idx), cfg.data, cfg.split)
    return out
