"""Shared-data helpers for tests: where ../shared/data is, and skip markers naming what is missing.

Tests that read the real datasets or weights carry `@pytest.mark.shared_data` (conftest
skips those when the folder is absent) and one of the `needs_*` markers below, which
skip with the exact missing path when only part of the data is there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EDGE_EE_DATA", ROOT.parent / "shared" / "data"))


def needs(*relpaths: str) -> pytest.MarkDecorator:
    """Skip unless every path exists under the shared data folder (reason names the first gap)."""
    missing = [p for p in relpaths if not (SHARED_DATA / p).exists()]
    reason = (f"needs {SHARED_DATA / missing[0]} (the real data in ../shared/data beside the "
              "checkout, or set EDGE_EE_DATA)") if missing else ""
    return pytest.mark.skipif(bool(missing), reason=reason)


needs_fashion = needs("fashion-mnist/train-images-idx3-ubyte.gz")
needs_cifar = needs("cifar10-jpeg.zip", "resnet-cifar10/resnet20.npz")


def fashion_subset(train_n: int, test_n: int, seed: int = 0):
    """A seeded Fashion-MNIST (train subset, first test images) pair."""
    import numpy as np

    from edge_ee.data import load_fashion_mnist

    tr = load_fashion_mnist("train", SHARED_DATA / "fashion-mnist")
    te = load_fashion_mnist("test", SHARED_DATA / "fashion-mnist")
    rng = np.random.default_rng(seed)
    return (tr.subset(np.sort(rng.choice(len(tr), train_n, replace=False))),
            te.subset(np.arange(test_n)))


def write_fashion_folder(folder: Path, train, test) -> Path:
    """Write two ImageSplits as a Fashion-MNIST IDX folder (what `--data` takes)."""
    import gzip
    import struct

    import numpy as np

    def idx(path: Path, arr: np.ndarray) -> None:
        head = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
        with gzip.open(path, "wb", compresslevel=1) as f:
            f.write(head + np.ascontiguousarray(arr, np.uint8).tobytes())

    folder.mkdir(parents=True, exist_ok=True)
    for prefix, s in (("train", train), ("t10k", test)):
        idx(folder / f"{prefix}-images-idx3-ubyte.gz", s.images[..., 0])
        idx(folder / f"{prefix}-labels-idx1-ubyte.gz", s.labels.astype(np.uint8))
    return folder


def camvid_test(path: Path):
    """The real CamVid test split from `path`; skips, naming the path, when it is absent."""
    if not path.is_file():
        pytest.skip(f"real CamVid data not found at {path}")
    from edge_ee.segmentation.data import load_camvid
    return load_camvid(path, splits=("test",))["test"]
