"""Image files → raw uint8 HWC arrays, the one decoder the host and the device share.

A bundle's `input.raw` section records how a user's images become the model input:
decode (Pillow) → resize the shorter side to `resize` (bilinear) → centre crop to `crop`
(H, W) → uint8 HWC; the runner then scales and normalises (`manifest.prepare_input`).
The host's `edge_ee.datasets.ImageFolder` decodes with these same functions, so an image
folder gives the same numbers on the host, through `edge-ee samples`, and on the device.

Folders follow torchvision's `ImageFolder` layout: `root/<class>/<image>`, classes in
sorted name order. Pillow is optional on a device (`pip install 'edge-ee[images]'`); every
problem is an `InputSpecError` (or the caller's error class) that says how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from device_runners.errors import EdgeEEError, InputSpecError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
INSTALL = "pip install 'edge-ee[images]' (or: pip install pillow)"


def pillow(error: type[EdgeEEError] = InputSpecError) -> Any:
    """The `PIL.Image` module, or `error` naming the install command."""
    try:
        from PIL import Image
    except ImportError as err:
        raise error(f"reading image files needs Pillow, which is not installed: {INSTALL}; "
                    "or pass an .npz made with `edge-ee samples`") from err
    return Image


def geometry(raw: dict[str, Any] | None) -> tuple[int | None, tuple[int, int] | None]:
    """(resize, crop) recorded in a manifest's `input.raw` (both None when absent)."""
    raw = raw or {}
    crop = raw.get("crop")
    return raw.get("resize"), (int(crop[0]), int(crop[1])) if crop else None


def check_size(size_wh: tuple[int, int], resize: int | None, crop: tuple[int, int] | None,
               want_hw: tuple[int, int] | None, where: Any,
               error: type[EdgeEEError] = InputSpecError) -> None:
    """An image of `size_wh` (Pillow's (W, H)) must end up `want_hw` after resize and crop."""
    w, h = size_wh
    if resize is not None:
        s = resize / min(w, h)
        w, h = max(1, round(w * s)), max(1, round(h * s))
    if crop is not None:
        if h < crop[0] or w < crop[1]:
            raise error(f"image {where} is {h}x{w} after resizing, smaller than the crop "
                        f"{crop[0]}x{crop[1]}; set a larger resize")
        h, w = crop
    if want_hw is not None and (h, w) != tuple(want_hw):
        raise error(f"image {where} is {h}x{w} (H x W) after resize/crop, the model takes "
                    f"{want_hw[0]}x{want_hw[1]}; resize the images or set resize/crop "
                    "(edge-ee build --resize/--crop)")


def load_image(path: str | Path, channels: int, resize: int | None = None,
               crop: tuple[int, int] | None = None, want_hw: tuple[int, int] | None = None,
               error: type[EdgeEEError] = InputSpecError) -> np.ndarray:
    """One image file as uint8 (H, W, channels): decode, resize, centre crop, checked size."""
    image = pillow(error)
    try:
        with image.open(path) as im:
            check_size(im.size, resize, crop, want_hw, path, error)
            img = im.convert("RGB" if channels == 3 else "L")
    except (OSError, image.UnidentifiedImageError, image.DecompressionBombError) as err:
        raise error(f"cannot read image {path}: {err}; remove or re-save the file") from err
    if resize is not None:
        w, h = img.size
        s = resize / min(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), image.BILINEAR)
    if crop is not None:
        ch, cw = crop
        w, h = img.size
        top, left = (h - ch) // 2, (w - cw) // 2
        img = img.crop((left, top, left + cw, top + ch))
    a = np.asarray(img, np.uint8)
    return a[..., None] if a.ndim == 2 else a


def list_folder(root: str | Path, classes: Sequence[str] | None = None,
                error: type[EdgeEEError] = InputSpecError
                ) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """(image paths, labels, class names) of `root/<class>/<image>`, sorted by class then name.

    `classes`: the model's class names; a class folder not among them is an error, and
    a missing one is fine (a test folder may lack a class). Without `classes` the sorted
    folder names are the classes. Loose images directly in `root` (no class folders)
    come back with label -1 (unlabelled)."""
    root = Path(root)
    if not root.is_dir():
        raise error(f"{root} is not a folder; pass a folder of class folders "
                    "(root/<class>/<image>)")
    dirs = sorted(p.name for p in root.iterdir() if p.is_dir())
    loose = sorted(str(p) for p in root.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if loose and not dirs:
        return loose, np.full(len(loose), -1, np.int64), tuple(classes or ())
    names = tuple(classes) if classes is not None else tuple(dirs)
    unknown = sorted(set(dirs) - set(names))
    if unknown:
        raise error(f"{root} has class folders {unknown[:5]} that the model lacks (its classes: "
                    f"{list(names)[:10]}{' …' if len(names) > 10 else ''}); remove or rename them")
    files: list[str] = []
    labels: list[int] = []
    for i, c in enumerate(names):
        if c not in dirs:
            continue
        found = sorted(str(p) for p in (root / c).iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise error(f"class folder {root / c} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                        "add images or remove the folder")
        files += found
        labels += [i] * len(found)
    if not files:
        raise error(f"{root} holds no class folders with images; lay it out as "
                    "root/<class>/<image>.jpg")
    return files, np.asarray(labels, np.int64), names


def read_folder(root: str | Path, raw: dict[str, Any], classes: Sequence[str],
                limit: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A whole image folder as the bundle's raw input (uint8 NHWC) and labels (None when the
    images are loose, not in class folders), decoded with the manifest's resize/crop."""
    files, labels, _ = list_folder(root, classes)
    if limit is not None:
        files, labels = files[:limit], labels[:limit]
    h, w, c = (int(d) for d in raw["shape"][1:])
    resize, crop = geometry(raw)
    x = np.empty((len(files), h, w, c), np.uint8)
    for i, f in enumerate(files):
        x[i] = load_image(f, c, resize, crop, (h, w))
    return x, (None if (labels < 0).all() else labels)
