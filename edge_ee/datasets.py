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
  manifest (`input.raw`) and the decoder is the device's own (`device_runners.images`),
  so `edge-ee-run --input FOLDER` preprocesses exactly as the host did.
* `DatasetSplit` wraps any map-style Dataset (e.g. from `--data module:factory`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from device_runners.images import check_size, list_folder, load_image, pillow
from edge_ee.data import ImageSplit
from edge_ee.errors import DataError


@dataclass(frozen=True)
class Preprocess:
    """Declared preprocessing: decode → resize (shorter side) → centre crop → uint8 HWC
    (`device_runners.images`, shared with the device) → /255 → (x − mean)/std → CHW.

    The manifest's `input.raw` records it (`manifest_raw`), so `edge-ee-run` applies exactly
    this to an image folder or to the uint8 images of an `edge-ee samples` file."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None  # shorter side, before the crop
    crop: tuple[int, int] | None = None  # (H, W)

    def __post_init__(self) -> None:
        if len(self.mean) not in (1, 3) or len(self.std) != len(self.mean):
            raise DataError(f"mean {self.mean} / std {self.std}: give one value per channel "
                            "(1 for grey, 3 for RGB images), the same number of each")
        if any(v <= 0 for v in self.std):
            raise DataError(f"std {self.std} must be > 0")
        if self.resize is not None and self.resize < 1:
            raise DataError(f"resize must be ≥ 1 pixel, got {self.resize}")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def raw(self, path: str | Path, want_hw: tuple[int, int] | None = None) -> np.ndarray:
        """One image file as uint8 (H, W, C) after resize and crop (a `DataError` if not)."""
        return load_image(path, self.channels, self.resize, self.crop, want_hw, DataError)

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) → float32 (N, C, H, W), the same arithmetic as ImageSplit."""
        x = raw.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def __call__(self, path: str | Path) -> torch.Tensor:
        return torch.from_numpy(self.normalise(self.raw(path)[None])[0])

    def manifest_raw(self) -> dict[str, Any]:
        """What `input.raw` adds to the scale/mean/std: the resize and crop of image files."""
        return {"resize": self.resize, "crop": list(self.crop) if self.crop else None}


class ImageFolder(Dataset):
    """`root/<class>/<image>` files (torchvision's layout), labels by sorted class folder
    name, streamed one image at a time through the declared `Preprocess`.

    It also offers what the build pipeline asks of a split — `labels`, `subset`,
    `normalised` (small subsets only), `raw_chunks` (for hashing) — without holding the
    images in memory: only the file names and labels are kept."""

    def __init__(self, root: str | Path, preprocess: Preprocess,
                 classes: Sequence[str] | None = None, image_hw: tuple[int, int] | None = None,
                 _listing: tuple[list[str], np.ndarray] | None = None) -> None:
        self.root = Path(root)
        self.preprocess = preprocess
        if _listing is None:
            files, labels, names = list_folder(self.root, classes, DataError)
            if (labels < 0).any():
                raise DataError(f"{self.root} holds loose images, not class folders; lay it out "
                                "as root/<class>/<image> so every image has a label")
            self.classes = names
        else:
            (files, labels), self.classes = _listing, tuple(classes or ())
        self.files, self.labels = files, labels
        self.image_hw = image_hw  # the size every image must have after resize/crop

    @property
    def mean(self) -> tuple[float, ...]:
        return self.preprocess.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.preprocess.std

    @property
    def raw_geometry(self) -> dict[str, Any]:
        return self.preprocess.manifest_raw()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        raw = self.preprocess.raw(self.files[i], self.image_hw)
        return torch.from_numpy(self.preprocess.normalise(raw[None])[0]), int(self.labels[i])

    def first_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the first image after resize/crop: the model's input size."""
        return self.preprocess.raw(self.files[0]).shape  # type: ignore[return-value]

    def check_headers(self) -> None:
        """Every file opens as an image of the right size (headers only: quick), before any
        long pass starts."""
        image = pillow(DataError)
        p = self.preprocess
        for f in self.files:
            try:
                with image.open(f) as im:
                    check_size(im.size, p.resize, p.crop, self.image_hw, f, DataError)
            except (OSError, image.UnidentifiedImageError) as err:
                raise DataError(f"cannot read image {f}: {err}; remove or re-save it") from err

    def subset(self, idx: np.ndarray) -> ImageFolder:
        idx = np.asarray(idx, np.int64)
        return ImageFolder(self.root, self.preprocess, self.classes, self.image_hw,
                           ([self.files[i] for i in idx], self.labels[idx]))

    def raw_chunks(self, batch: int = 256) -> Iterator[np.ndarray]:
        """The raw uint8 (n, H, W, C) images in order, `batch` at a time."""
        for i in range(0, len(self), batch):
            yield np.stack([self.preprocess.raw(f, self.image_hw)
                            for f in self.files[i : i + batch]])

    def normalised(self) -> np.ndarray:
        """All images as float32 NCHW (for small subsets: validation, int8 calibration)."""
        if not len(self):
            return np.zeros((0, self.preprocess.channels, *(self.image_hw or (1, 1))), np.float32)
        return self.preprocess.normalise(np.concatenate(list(self.raw_chunks())))


class DatasetSplit(Dataset):
    """Any map-style torch Dataset of (input tensor, label) with `classes`, given what the
    build pipeline asks of a split (`labels`, `subset`, `normalised`, `raw_chunks`).
    `labels` come from the dataset's `targets` (torchvision's convention), else one pass."""

    def __init__(self, dataset: Dataset, mean: tuple[float, ...] = (),
                 std: tuple[float, ...] = (), indices: np.ndarray | None = None) -> None:
        self.dataset, self.mean, self.std = dataset, tuple(mean), tuple(std)
        self.classes = classes_of(dataset)
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)  # type: ignore[arg-type]
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[int(self.indices[i])]

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            targets = getattr(self.dataset, "targets", None)
            if targets is not None:
                self._labels = np.asarray(targets, np.int64)[self.indices]
            else:
                self._labels = np.concatenate([y.cpu().numpy() for _, y in stream(self)]
                                              or [np.zeros(0, np.int64)])
        return self._labels

    def subset(self, idx: np.ndarray) -> DatasetSplit:
        out = DatasetSplit(self.dataset, self.mean, self.std, self.indices[np.asarray(idx)])
        if self._labels is not None:
            out._labels = self._labels[np.asarray(idx)]
        return out

    def raw_chunks(self, batch: int = 256) -> Iterator[np.ndarray]:
        for x, _ in stream(self, batch):
            yield x.numpy()

    def normalised(self) -> np.ndarray:
        """The inputs as the dataset yields them (already normalised), stacked."""
        return np.concatenate(list(self.raw_chunks()))


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
