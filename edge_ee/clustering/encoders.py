"""Where the clustering backbone and its data come from: small sources registered by name.

A source yields an `Encoder`: the stages (one exit point after each), the module that
maps the last stage's feature to the embedding that k-means clusters, the input shape,
the train/test splits and the weights' sha256 (provenance).

* `fashion-ae`: the shipped convolutional autoencoder's encoder on Fashion-MNIST
  (trained on reconstruction only: no labels anywhere, `autoencoder.py`).
* `resnet-cifar`: a pretrained CIFAR ResNet (default ResNet-20) on CIFAR-10 JPEGs; the
  embedding is its globally pooled last feature (64-d). Those weights were trained
  **with** CIFAR-10 labels (supervised, He et al.), so this source tests early exit for
  clustering on a second data set, not unsupervised representation learning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from edge_ee.data import ImageSplit, load_cifar10_jpeg, load_fashion_mnist, shared_data_dir
from edge_ee.errors import ConfigError
from edge_ee.exitnet import from_resnet_cifar
from edge_ee.models.resnet_cifar import load_resnet_cifar
from edge_ee.models.weights import sha256_file


@dataclass
class Encoder:
    """A backbone cut into exit stages plus its embedding head, with its data."""

    name: str
    stages: list[nn.Module]
    embed: nn.Module  # last stage's feature → (B, D) embedding
    exit_names: list[str]
    input_shape: tuple[int, ...]
    train: ImageSplit
    test: ImageSplit
    source_sha256: str | None  # None: trained in this run
    features_trained_with: str  # what the weights saw in training (honest provenance)


class FashionAutoencoder:
    """The shipped (or a given) Fashion-MNIST autoencoder encoder."""

    name = "fashion-ae"

    def load(self, data: str | None, weights: str | None, train_epochs: int = 0) -> Encoder:
        from edge_ee.clustering.autoencoder import load_encoder, train_autoencoder
        train, test = load_fashion_mnist("train", data), load_fashion_mnist("test", data)
        if train_epochs > 0:
            enc, digest = train_autoencoder(train, train_epochs), None
        else:
            enc, digest = load_encoder(weights)
        children = list(enc.children())
        return Encoder(self.name, children[:-1], children[-1],
                       [f"block{i + 1}" for i in range(len(children) - 1)], (1, 28, 28),
                       train, test, digest,
                       "Fashion-MNIST train images, reconstruction loss only (no labels)")


class CifarResNetFeatures:
    """A pretrained CIFAR ResNet's residual blocks; embedding = globally pooled last feature."""

    name = "resnet-cifar"

    def load(self, data: str | None, weights: str | None, train_epochs: int = 0) -> Encoder:
        if train_epochs:
            raise ConfigError("--train-epochs only applies to the fashion-ae encoder; the "
                              "resnet-cifar source uses pretrained weights")
        path = Path(weights) if weights else shared_data_dir() / "resnet-cifar10" / "resnet20.npz"
        net = from_resnet_cifar(load_resnet_cifar(path))
        embed = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return Encoder(f"{net.name}-cifar10", list(net.stages), embed, net.exit_names,
                       net.input_shape, load_cifar10_jpeg("train", data),
                       load_cifar10_jpeg("test", data), sha256_file(path),
                       "CIFAR-10 train images WITH their class labels (supervised "
                       "pretraining, He et al. 2016); k-means and exits use no labels")


ENCODERS: dict[str, type] = {c.name: c for c in (FashionAutoencoder, CifarResNetFeatures)}


def load_encoder_source(name: str, data: str | None = None, weights: str | None = None,
                        train_epochs: int = 0) -> Encoder:
    """The encoder and data of a registered source."""
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; choose from {sorted(ENCODERS)}")
    return ENCODERS[name]().load(data, weights, train_epochs)
