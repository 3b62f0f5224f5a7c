"""Real weights and datasets: loading, checksums and the errors for bad files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_ee.data import check_labels, load_cifar10_jpeg, load_fashion_mnist, read_idx
from edge_ee.errors import DataError, ModelError
from edge_ee.exits.fit import batches
from edge_ee.models.resnet_cifar import CifarResNet, load_resnet_cifar
from edge_ee.models.small_cnn import load_small_cnn

pytestmark = pytest.mark.shared_data


def test_pretrained_resnet20_is_accurate_on_real_cifar(data_dir: Path) -> None:
    model = load_resnet_cifar(data_dir / "resnet-cifar10" / "resnet20.npz")
    assert model.depth == 20
    test = load_cifar10_jpeg("test", data_dir / "cifar10-jpeg.zip", per_class=30)
    with torch.no_grad():
        acc = np.mean([float((model(x).argmax(1) == y).float().mean()) for x, y in
                       batches(test, 300, progress=False)])
    assert acc > 0.7  # about 81 % on the full JPEG test split


def test_resnet_checksum_mismatch_is_refused(tmp_path: Path, data_dir: Path) -> None:
    bad = tmp_path / "resnet20.npz"  # the known name, other content
    shutil.copy(data_dir / "resnet-cifar10" / "resnet56.npz", bad)
    with pytest.raises(ModelError, match="sha256"):
        load_resnet_cifar(bad)


def test_truncated_weights_give_a_clear_error(tmp_path: Path, data_dir: Path) -> None:
    src = (data_dir / "resnet-cifar10" / "resnet56.npz").read_bytes()
    p = tmp_path / "mine.npz"
    p.write_bytes(src[: len(src) // 2])
    with pytest.raises(ModelError, match="truncated or corrupt"):
        load_resnet_cifar(p)


def test_weights_that_do_not_fit_name_the_keys(tmp_path: Path) -> None:
    p = tmp_path / "w.pt"
    torch.save({"conv1.weight": torch.zeros(16, 3, 3, 3)}, p)
    with pytest.raises(ModelError, match="missing"):
        load_small_cnn(p)
    with pytest.raises(ModelError, match="6n\\+2"):
        CifarResNet(depth=21)


def test_fashion_mnist_real_and_shipped_cnn(data_dir: Path) -> None:
    test = load_fashion_mnist("test", data_dir / "fashion-mnist")
    assert test.images.shape == (10000, 28, 28, 1) and set(np.unique(test.labels)) == set(range(10))
    model = load_small_cnn()
    with torch.no_grad():
        x, y = next(batches(test.subset(np.arange(1000)), 1000, progress=False))
        assert float((model(x).argmax(1) == y).float().mean()) > 0.85


def test_truncated_idx_file(tmp_path: Path, data_dir: Path) -> None:
    raw = gzip.open(data_dir / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").read()
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(p)
    with pytest.raises(DataError, match="no Fashion-MNIST"):
        load_fashion_mnist("test", tmp_path / "nowhere")


def test_labels_out_of_range() -> None:
    with pytest.raises(DataError, match=r"outside 0\.\.9"):
        check_labels(np.array([0, 3, 12]), 10, "labels.npy")
