"""`edge-ee build --data` for a model of your own: an .npz, an image folder, or a factory.

* `mine.npz` — `x_train`/`y_train`/`x_test`/`y_test` uint8 NHWC (+ `classes`, `mean`, `std`),
  held in memory (`edge_ee.data.load_npz_split`).
* `DIR` with `DIR/train/<class>/<image>` and `DIR/test/<class>/<image>` (torchvision's
  ImageFolder layout) — streamed: only file names and labels are kept. Images are decoded,
  resized (`--resize`, shorter side), centre cropped (`--crop H,W`), scaled to [0, 1] and
  normalised (`--mean/--std`, required); that `Preprocess` is recorded in the manifest's
  `input.raw`, so `edge-ee-run --input FOLDER` does the same on the device.
* `file.py:factory` or `package.module:factory` — called as `factory("train")` and
  `factory("test")`, each returning a map-style torch Dataset of (float tensor, int label)
  with a `classes` attribute (labels checked up front from `targets` when it has one).
* A CIFAR-10 JPEG zip or a Fashion-MNIST IDX folder, as for the shipped models.

Every check runs before any pass over the data: class folders that differ between the
splits, empty class folders, unreadable images or images of the wrong size (headers only),
labels outside the model's classes (its output width), and no declared normalisation.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_ee.data import ImageSplit, load_cifar10_jpeg, load_fashion_mnist, load_npz_split
from edge_ee.datasets import DatasetSplit, ImageFolder, Preprocess
from edge_ee.errors import ConfigError, DataError

NO_DATA = ("a model of your own needs --data: an image folder with train/<class>/ and "
           "test/<class>/, an .npz with x_train/y_train/x_test/y_test, a module:factory "
           "returning a Dataset, a CIFAR-10 JPEG zip or a Fashion-MNIST IDX folder")


def is_image_root(data: str) -> bool:
    """A folder holding `train/` and `test/` class folders (not a Fashion-MNIST IDX folder)."""
    p = Path(data)
    return p.is_dir() and (p / "train").is_dir()


def is_factory(data: str) -> bool:
    return ":" in data and not Path(data).exists() and not data.endswith((".npz", ".zip"))


def load_user_data(data: str | None, user: Any) -> tuple[Any, Any, tuple[int, ...]]:
    """(train, test, input shape C,H,W) for `--data` and the `UserModel` options."""
    if data is None:
        raise ConfigError(NO_DATA)
    if is_image_root(data):
        return image_folder_splits(data, user)
    if is_factory(data):
        return dataset_factory_splits(data, user)
    if not Path(data).exists():
        raise DataError(f"--data {data}: no such file or folder; {NO_DATA[NO_DATA.index('an '):]}")
    if data.endswith(".npz"):
        train, test = load_npz_split("train", data), load_npz_split("test", data)
    elif data.endswith(".zip"):
        train, test = load_cifar10_jpeg("train", data), load_cifar10_jpeg("test", data)
    elif Path(data).is_dir() and not any(Path(data).glob("*idx*")):
        raise DataError(f"--data {data}: an image folder needs train/<class>/<image> and "
                        "test/<class>/<image> inside it")
    else:
        train, test = load_fashion_mnist("train", data), load_fashion_mnist("test", data)
    mean, std = user.mean or train.mean, user.std or train.std
    _check_norm(mean, std)
    train, test = replace(train, mean=mean, std=std), replace(test, mean=mean, std=std)
    shape = user.input_shape or (train.images.shape[3], *train.images.shape[1:3])
    return train, test, tuple(shape)


def _check_norm(mean: Any, std: Any) -> None:
    if not mean or not std or len(mean) != len(std):
        raise ConfigError("the data declares no normalisation: pass --mean and --std (one "
                          "value per channel, for images scaled to [0, 1])")


def image_folder_splits(data: str, user: Any) -> tuple[ImageFolder, ImageFolder, tuple[int, ...]]:
    """Streamed train/test image folders, checked (classes, sizes, readability) up front."""
    root = Path(data)
    if not (root / "test").is_dir():
        raise DataError(f"--data {root}: no test/ folder beside train/; lay the data out as "
                        f"{root}/train/<class>/<image> and {root}/test/<class>/<image>")
    _check_norm(user.mean, user.std)
    pre = Preprocess(tuple(user.mean), tuple(user.std), user.resize, user.crop)
    train = ImageFolder(root / "train", pre)
    test_classes = sorted(p.name for p in (root / "test").iterdir() if p.is_dir())
    if tuple(test_classes) != train.classes:
        missing = sorted(set(train.classes) - set(test_classes))
        extra = sorted(set(test_classes) - set(train.classes))
        raise DataError(f"--data {root}: the class folders of train/ and test/ differ (test/ "
                        f"lacks {missing[:5]}, has extra {extra[:5]}); give both splits the "
                        "same class folders")
    test = ImageFolder(root / "test", pre, train.classes)
    h, w, c = train.first_shape()
    if user.input_shape is not None:
        if len(user.input_shape) != 3 or user.input_shape[0] != c:
            raise ConfigError(f"--input-shape {user.input_shape}: the images have {c} "
                              "channel(s) (one --mean value each); pass C,H,W with C = "
                              f"{c}")
        h, w = user.input_shape[1:]
    for split in (train, test):
        split.image_hw = (h, w)
        split.check_headers()
    return train, test, (c, h, w)


def dataset_factory_splits(data: str, user: Any) -> tuple[DatasetSplit, DatasetSplit,
                                                          tuple[int, ...]]:
    """`factory("train")`, `factory("test")`: map-style Datasets wrapped for the pipeline."""
    from torch.utils.data import Dataset, IterableDataset

    from edge_ee.models.user import import_factory
    factory = import_factory(data, "--data", DataError)
    splits = []
    for name in ("train", "test"):
        try:
            ds = factory(name)
        except Exception as err:  # the user's factory may raise anything
            raise DataError(f"--data {data!r}: factory({name!r}) raised {err!r}") from err
        if isinstance(ds, IterableDataset) or not isinstance(ds, Dataset):
            raise DataError(f"--data {data!r}: factory({name!r}) returned "
                            f"{type(ds).__name__}; build needs a map-style torch Dataset "
                            "(a hold-out is drawn from it), with len() and ds[i] = (x, label)")
        splits.append(DatasetSplit(ds, tuple(user.mean or ()), tuple(user.std or ())))
    train, test = splits
    if train.classes != test.classes:
        raise DataError(f"--data {data!r}: train classes {list(train.classes)[:10]} differ from "
                        f"test classes {list(test.classes)[:10]}; return the same class list")
    item = train[0]
    if not isinstance(item, (tuple, list)) or len(item) != 2 or not torch.is_tensor(item[0]):
        raise DataError(f"--data {data!r}: items must be (input tensor, label) pairs")
    shape = tuple(user.input_shape or item[0].shape)
    for split, name in ((train, "train"), (test, "test")):
        if getattr(split.dataset, "targets", None) is not None:
            check_label_range(split.labels, len(split.classes), f"--data {data} ({name})")
    return train, test, shape


def check_label_range(labels: np.ndarray, k: int, where: str) -> None:
    bad = (labels < 0) | (labels >= k)
    if bad.any():
        raise DataError(f"{where}: labels {np.unique(labels[bad])[:10].tolist()} are outside "
                        f"0..{k - 1} (the {k} classes); fix the labels or the class list")


@torch.no_grad()
def check_model_classes(net: torch.nn.Module, shape: tuple[int, ...], train: Any) -> None:
    """The model's output width must equal the data's number of classes."""
    width = int(net.eval()(torch.zeros(1, *shape)).shape[-1])
    k = len(train.classes)
    if width != k:
        raise DataError(f"the model predicts {width} classes but the data has {k} "
                        f"({list(train.classes)[:10]}); give the data the model's classes (one "
                        "class folder per output, in sorted order) or change the model's head")
    if isinstance(train, ImageSplit):
        check_label_range(train.labels, width, "--data")
