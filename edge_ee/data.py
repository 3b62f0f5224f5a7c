"""Real datasets, read from files the user already has (nothing is downloaded).

* Fashion-MNIST in IDX format (gzip or plain), e.g. Debian's `dataset-fashion-mnist`
  package (`/usr/share/datasets/fashion-mnist/`) or `../shared/data/fashion-mnist`.
* CIFAR-10 as a zip of JPEG files `train/<class>/NNNN.jpg`, `test/<class>/NNNN.jpg`.

Loaders return uint8 images in NHWC plus int64 labels; `to_tensor_dataset` normalises.
Every problem (missing file, truncated file, labels out of range) is a `DataError`
naming the file and the fix.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device_runners.files import atomic_save_npz
from edge_ee.errors import DataError

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)
FASHION_MEAN = (0.2860,)
FASHION_STD = (0.3530,)

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)


@dataclass(frozen=True)
class ImageSplit:
    """Images (N, H, W, C) uint8 and labels (N,) int64, with class names and normalisation."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> ImageSplit:
        return ImageSplit(self.images[idx], self.labels[idx], self.classes, self.mean, self.std)

    def normalised(self) -> np.ndarray:
        """Float32 NCHW, scaled to [0, 1] then normalised with the split's mean/std."""
        x = self.images.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def shared_data_dir() -> Path:
    """`$EDGE_EE_DATA`, else `../shared/data` beside the project checkout."""
    env = os.environ.get("EDGE_EE_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def find_fashion_mnist(data_dir: str | Path | None = None) -> Path:
    """Locate a Fashion-MNIST folder: the one given, Debian's package, or the shared data."""
    candidates = [Path(data_dir)] if data_dir else [
        *map(Path, FASHION_MNIST_DIRS), shared_data_dir() / "fashion-mnist"
    ]
    for c in candidates:
        if _idx_path(c, "train-images-idx3-ubyte", required=False) is not None:
            return c
    raise DataError(
        f"no Fashion-MNIST IDX files in {', '.join(map(str, candidates))}; install Debian's "
        "'dataset-fashion-mnist' package or pass --data DIR with train-images-idx3-ubyte(.gz) etc."
    )


def _idx_path(folder: Path, stem: str, required: bool = True) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    if required:
        raise DataError(f"{folder / stem}(.gz) not found; pass --data DIR pointing at the IDX files")
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip or plain) into a numpy array, checking its size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}; the file is truncated or not IDX") from err
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise DataError(
            f"{path} is truncated: header says {dims} = {int(np.prod(dims))} bytes, "
            f"found {len(body)}; re-copy the file"
        )
    return np.frombuffer(body, np.uint8).reshape(dims)


def load_fashion_mnist(split: str, data_dir: str | Path | None = None) -> ImageSplit:
    """Fashion-MNIST `train` (60k) or `test` (10k) as (N, 28, 28, 1) uint8."""
    folder = find_fashion_mnist(data_dir)
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    images = read_idx(_idx_path(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_idx_path(folder, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{folder}: {len(images)} images but {len(labels)} labels")
    check_labels(labels, len(FASHION_MNIST_CLASSES), str(folder))
    return ImageSplit(images[..., None], labels, FASHION_MNIST_CLASSES, FASHION_MEAN, FASHION_STD)


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Labels must be integers in [0, num_classes)."""
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise DataError(
            f"{where}: {int(bad.sum())} labels outside 0..{num_classes - 1} "
            f"(e.g. {labels[bad][:5].tolist()}); fix the labels or the class list"
        )


def _cache_dir() -> Path:
    return Path(os.environ.get("EDGE_EE_CACHE", Path.home() / ".cache" / "edge-ee"))


def load_cifar10_jpeg(
    split: str, zip_path: str | Path | None = None, per_class: int | None = None
) -> ImageSplit:
    """CIFAR-10 from the JPEG zip: (N, 32, 32, 3) uint8, labels in the standard order.

    `per_class` takes the first n files of each class (sorted names) for quick tests.
    The full decode is cached as .npz under `$EDGE_EE_CACHE` keyed by the zip's size+mtime.
    """
    zp = Path(zip_path) if zip_path else shared_data_dir() / "cifar10-jpeg.zip"
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    if not zp.is_file():
        raise DataError(f"{zp} not found; pass the path of the CIFAR-10 JPEG zip")
    st = zp.stat()
    key = hashlib.sha256(f"{zp.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = _cache_dir() / f"cifar10-{split}-{key}-{per_class or 'all'}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return ImageSplit(z["x"], z["y"], CIFAR10_CLASSES, CIFAR_MEAN, CIFAR_STD)
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - host extra installs pillow
        raise DataError("reading CIFAR-10 JPEGs needs Pillow: pip install 'edge-ee[host]'") from err
    xs, ys = [], []
    try:
        with zipfile.ZipFile(zp) as z:
            names = sorted(n for n in z.namelist() if n.startswith(f"{split}/") and n.endswith(".jpg"))
            for label, cls in enumerate(CIFAR10_CLASSES):
                files = [n for n in names if n.split("/")[1] == cls]
                if not files:
                    raise DataError(f"{zp}: no {split}/{cls}/*.jpg; is this the CIFAR-10 JPEG zip?")
                for n in files[:per_class]:
                    img = Image.open(io.BytesIO(z.read(n))).convert("RGB")
                    xs.append(np.asarray(img, np.uint8))
                    ys.append(label)
    except zipfile.BadZipFile as err:
        raise DataError(f"{zp} is not a readable zip ({err}); re-copy it") from err
    x, y = np.stack(xs), np.asarray(ys, np.int64)
    atomic_save_npz(cache, x=x, y=y)
    return ImageSplit(x, y, CIFAR10_CLASSES, CIFAR_MEAN, CIFAR_STD)


def load_npz_split(split: str, path: str | Path) -> ImageSplit:
    """A split of a user's `.npz`: `x_<split>` (N, H, W, C) uint8 and `y_<split>` labels, with
    optional `classes` (names), `mean` and `std` (per channel, for images scaled to [0, 1])."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            kx, ky = f"x_{split}", f"y_{split}"
            if kx not in z.files or ky not in z.files:
                raise DataError(f"{p} has no {kx}/{ky}; save np.savez(f, x_train=..., "
                                "y_train=..., x_test=..., y_test=..., mean=..., std=...)")
            x, y = z[kx], z[ky].astype(np.int64)
            classes = tuple(str(c) for c in z["classes"]) if "classes" in z.files else None
            mean = tuple(float(v) for v in z["mean"]) if "mean" in z.files else ()
            std = tuple(float(v) for v in z["std"]) if "std" in z.files else ()
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {p}: {err}") from err
    if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(y):
        raise DataError(f"{p}: {kx} must be uint8 (N, H, W, C) with one label each, got "
                        f"{x.dtype} {x.shape} and {len(y)} labels")
    classes = classes or tuple(str(i) for i in range(int(y.max()) + 1 if y.size else 0))
    check_labels(y, len(classes), str(p))
    return ImageSplit(x, y, classes, mean, std)


def split_indices(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of range(n) into (rest, held_out) with |held_out| = fraction·n."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    k = round(fraction * n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def balanced_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded class-balanced sample of `n` items (test splits come sorted
    by class, so their first n are one or two classes): ⌊n/K⌋ per class, the remainder from
    randomly chosen classes; a class with too few items gives all it has."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = np.full(len(classes), n // len(classes))
    per[rng.choice(len(classes), n % len(classes), replace=False)] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), min(k, int((labels == c).sum())),
                         replace=False) for c, k in zip(classes, per, strict=True)]
    return np.sort(np.concatenate(picked))
