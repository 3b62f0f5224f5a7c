"""CamVid 120x160 loader with validation (labels 0..10, 11 = void/ignore).

The file is `../shared/data/camvid-120x160.npz` relative to the project root, with
`x_{train,val,test}` uint8 (N,120,160,3) and `y_*` uint8 (N,120,160).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_ee.segmentation.errors import SegmentationError

CLASS_NAMES: tuple[str, ...] = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_INDEX = 11
IMAGE_HW: tuple[int, int] = (120, 160)
MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SPLITS = ("train", "val", "test")


def default_camvid_path() -> Path:
    """`../shared/data/camvid-120x160.npz` relative to the project root."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "camvid-120x160.npz"


@dataclass(frozen=True)
class CamVidSplit:
    """One split: images uint8 (N,H,W,3) and labels uint8 (N,H,W)."""

    images: np.ndarray
    labels: np.ndarray
    name: str

    def __len__(self) -> int:
        return int(self.images.shape[0])


def validate_labels(labels: np.ndarray, num_classes: int = NUM_CLASSES,
                    ignore_index: int = IGNORE_INDEX, hw: tuple[int, int] | None = None) -> None:
    """Raise `SegmentationError` if labels are not integer, of the wrong size or out of range."""
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer):
        raise SegmentationError(
            f"labels must be an integer array, got dtype {arr.dtype}; cast class indices to int")
    if arr.ndim < 2:
        raise SegmentationError(f"labels must be (..., H, W), got shape {arr.shape}")
    if hw is not None and tuple(arr.shape[-2:]) != tuple(hw):
        raise SegmentationError(
            f"labels have spatial size {tuple(arr.shape[-2:])}, expected {tuple(hw)}; "
            "resize labels with nearest-neighbour to the image size")
    bad = (arr != ignore_index) & ((arr < 0) | (arr >= num_classes))
    if bad.any():
        values = np.unique(arr[bad])[:10].tolist()
        raise SegmentationError(
            f"labels contain values {values} outside classes 0..{num_classes - 1} and not the "
            f"ignore value {ignore_index}; remap them to a class or to {ignore_index}")


def validate_images(images: np.ndarray, hw: tuple[int, int] = IMAGE_HW) -> None:
    """Raise `SegmentationError` unless images are uint8 (N,H,W,3) of size `hw`."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise SegmentationError(
            f"images must be uint8 (N,H,W,3), got {arr.dtype} {arr.shape}")
    if tuple(arr.shape[1:3]) != tuple(hw):
        raise SegmentationError(
            f"images are {tuple(arr.shape[1:3])}, the network expects {tuple(hw)}; resize them")


def load_camvid(path: str | Path | None = None, splits: tuple[str, ...] = SPLITS
                ) -> dict[str, CamVidSplit]:
    """Load and validate CamVid splits from the npz file."""
    p = Path(path) if path is not None else default_camvid_path()
    if not p.is_file():
        raise SegmentationError(
            f"CamVid file {p} not found; put camvid-120x160.npz in ../shared/data or pass a path")
    out: dict[str, CamVidSplit] = {}
    with np.load(p) as data:
        for name in splits:
            if name not in SPLITS:
                raise SegmentationError(f"unknown split {name!r}; use one of {SPLITS}")
            kx, ky = f"x_{name}", f"y_{name}"
            if kx not in data.files or ky not in data.files:
                raise SegmentationError(f"{p} lacks {kx}/{ky}; the file is truncated or not CamVid")
            x, y = data[kx], data[ky]
            validate_images(x)
            validate_labels(y, hw=tuple(x.shape[1:3]))
            if y.shape[0] != x.shape[0]:
                raise SegmentationError(
                    f"{name}: {x.shape[0]} images but {y.shape[0]} label maps")
            out[name] = CamVidSplit(images=x, labels=y, name=name)
    return out


def normalize_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N,H,W,3) → float32 (N,3,H,W), ImageNet mean/std normalised (numpy only)."""
    validate_images(images, hw=tuple(np.asarray(images).shape[1:3]))
    x = images.astype(np.float32) / 255.0
    x = (x - MEAN_RGB) / STD_RGB
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
