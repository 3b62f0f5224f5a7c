"""Any data a user has, streamed: torch Datasets and DataLoaders, image folders, .npz files.

The statistics, scoring and calibration passes take either an in-memory `ImageSplit`
(the shipped loaders) or any map-style or iterable torch `Dataset`/`DataLoader` yielding
(input, label) — nothing is held in memory beyond one batch. `stream` is the one
iterator over both: normalised float32 batches and int64 labels on the requested device,
through DataLoader workers (pinned memory on CUDA), sharded by a `DistributedSampler`
when torch.distributed is active (`ShardSampler`: every sample exactly once).

* `ImageFolder` reads `root/<class>/<file>.{jpg,png,...}` (classes in sorted order, as
  torchvision's ImageFolder) and applies a declared `Preprocess` (resize, centre crop,
  scale to [0, 1], mean/std, layout) — the same spec is recorded in the bundle's
  manifest (`input.raw`) so the device normalises exactly as the host did.
* `NpzDataset` reads `x` (N, H, W, C uint8) and `y` from an .npz.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from edge_ee.data import ImageSplit
from edge_ee.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Preprocess:
    """Declared preprocessing: resize → centre crop → /255 → (x − mean)/std → NCHW."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None  # shorter side, before the crop
    crop: tuple[int, int] | None = None  # (H, W)

    def __call__(self, img: Any) -> torch.Tensor:
        from PIL import Image
        if self.resize is not None:
            w, h = img.size
            s = self.resize / min(w, h)
            img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
        if self.crop is not None:
            ch, cw = self.crop
            w, h = img.size
            if h < ch or w < cw:
                raise DataError(f"an image of {h}x{w} is smaller than the crop {ch}x{cw}; "
                                "set a resize")
            top, left = (h - ch) // 2, (w - cw) // 2
            img = img.crop((left, top, left + cw, top + ch))
        a = np.asarray(img, np.float32) / 255.0
        if a.ndim == 2:
            a = a[..., None]
        a = (a - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))

    def manifest_raw(self, shape_hwc: Sequence[int]) -> dict[str, Any]:
        """The `input.raw` record: how the device turns uint8 NHWC into the model input."""
        return {"dtype": "uint8", "shape": [None, *shape_hwc], "layout": "NHWC",
                "scale": 1.0 / 255.0, "mean": list(self.mean), "std": list(self.std),
                "resize": self.resize, "crop": list(self.crop) if self.crop else None}


class ImageFolder(Dataset):
    """`root/<class>/<image>` files, labels by sorted class folder name."""

    def __init__(self, root: str | Path, preprocess: Preprocess,
                 classes: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root} is not a folder of class folders")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.classes = tuple(classes) if classes is not None else tuple(found)
        unknown = sorted(set(found) - set(self.classes))
        if unknown:
            raise DataError(f"{self.root} has class folders {unknown[:5]} the model lacks "
                            f"(it has {list(self.classes)[:10]}); remove them or map them")
        self.files = [(p, i) for i, c in enumerate(self.classes) if (self.root / c).is_dir()
                      for p in sorted((self.root / c).iterdir())
                      if p.suffix.lower() in IMAGE_SUFFIXES]
        if not self.files:
            raise DataError(f"{self.root} holds no images ({', '.join(IMAGE_SUFFIXES)}) in "
                            "class folders")
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError
        path, label = self.files[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB" if len(self.preprocess.mean) == 3 else "L")
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"cannot read image {path}: {err}") from err
        return self.preprocess(img), label


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, … : every sample exactly once over all processes.

    (torch's `DistributedSampler` pads the shards to equal length by repeating samples,
    which would count those twice in a sum.)"""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def classes_of(data: Any) -> tuple[str, ...]:
    """Class names of an ImageSplit, a Dataset with `.classes`, or a DataLoader over one."""
    ds = data.dataset if isinstance(data, DataLoader) else data
    classes = getattr(ds, "classes", None)
    if classes is None:
        raise DataError(f"{type(ds).__name__} has no `classes` attribute; set "
                        "dataset.classes = [names...] so exits know the label set")
    return tuple(classes)


def stream(data: ImageSplit | Dataset | DataLoader, batch_size: int = 256,
           device: str | torch.device = "cpu", shard: bool = False, workers: int = 0
           ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x float32, y int64) batches on `device`. `shard`: this process's share of the data
    when torch.distributed is active (statistics passes), else everything."""
    from edge_ee import distributed
    dev = torch.device(device)
    if isinstance(data, ImageSplit):
        n = len(data)
        idx = np.arange(n)
        if shard and distributed.active():
            idx = idx[distributed.rank()::distributed.world_size()]
        for i in range(0, len(idx), batch_size):
            part = data.subset(idx[i : i + batch_size])
            yield (torch.from_numpy(part.normalised()).to(dev),
                   torch.from_numpy(part.labels).to(dev))
        return
    loader = data
    if not isinstance(data, DataLoader):
        sampler = (ShardSampler(len(data), distributed.rank(), distributed.world_size())
                   if shard and distributed.active() and not isinstance(data, IterableDataset)
                   else None)
        loader = DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=workers,
                            pin_memory=dev.type == "cuda")
    for item in loader:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataError(f"the data must yield (input, label) pairs, got {type(item).__name__}"
                            f"{'' if not isinstance(item, (tuple, list)) else f' of {len(item)}'}")
        x, y = item
        if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
            raise DataError("inputs must be float tensors (normalised images); apply the "
                            "preprocessing in the Dataset")
        y = torch.as_tensor(y)
        if y.dtype.is_floating_point or y.ndim != 1:
            raise DataError(f"labels must be a 1-D integer tensor per batch, got {y.dtype} "
                            f"{tuple(y.shape)}")
        yield x.to(dev, non_blocking=True), y.to(dev, torch.int64)
