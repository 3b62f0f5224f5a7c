"""Model factories for dataset pruning: a fresh, seeded network cut into an `ExitNet`.

A scorer or the evaluation harness asks for a *fresh* model many times (one per seed, per
pruning ratio), so models are named factories, not weights: `make_model(name, in_channels,
num_classes, seed)` returns an `nn.Sequential` whose children (all but the last) are the
exit points. `exit_point(name, location)` maps `before` / `middle` / `after` (or an index)
to one of those points.

* `compact-cnn`: four conv-BN-ReLU blocks (16-32-32-64 channels, three of stride 2) +
  pool + linear, about 1 MMAC per 28x28 image — sized so the whole evidence run fits on
  two shared CPU cores. Exit points 0..3; before = 0, middle = 1, after = 2.
* `mlp`: flatten → 256 → 256 → 128 → classes (ReLU), exits after each hidden layer;
  about 0.3 MMAC per 28x28 image, for full-size runs on a loaded machine. Exit points
  0..2; before = 0, middle = 1, after = 2.
* `small-cnn`: the project's Fashion-MNIST CNN (`edge_ee.models.small_cnn`, five blocks),
  trained from scratch here. Exit points 0..4; before = 1, middle = 2, after = 3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_ee.errors import ConfigError

if TYPE_CHECKING:  # torch is imported when a model is built, so config checks stay light
    from torch import nn

    from edge_ee.exitnet import ExitNet

LOCATIONS = ("before", "middle", "after")


def compact_cnn(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """Four conv blocks (16-32-32-64, stride 2 at blocks 0, 1, 3) + pool + linear."""
    from torch import nn

    from edge_ee.models.small_cnn import conv_bn
    return nn.Sequential(
        conv_bn(in_channels, 16, 2),
        conv_bn(16, 32, 2),
        conv_bn(32, 32),
        conv_bn(32, 64, 2),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)),
    )


def mlp(in_channels: int = 1, num_classes: int = 10, side: int = 28) -> nn.Sequential:
    """Three hidden layers (256-256-128, ReLU) on the flattened side×side image."""
    from torch import nn
    return nn.Sequential(
        nn.Sequential(nn.Flatten(), nn.Linear(in_channels * side * side, 256), nn.ReLU()),
        nn.Sequential(nn.Linear(256, 256), nn.ReLU()),
        nn.Sequential(nn.Linear(256, 128), nn.ReLU()),
        nn.Linear(128, num_classes),
    )


@dataclass(frozen=True)
class ModelFactory:
    """A named architecture: builder(in_channels, num_classes) and its exit locations."""

    name: str
    builder: Callable[[int, int], nn.Sequential]
    locations: dict[str, int]
    n_exits: int  # exit points: children of the Sequential but the last

    def __call__(self, in_channels: int, num_classes: int, seed: int = 0) -> nn.Sequential:
        import torch
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return self.builder(in_channels, num_classes)


def _small_cnn(in_channels: int, num_classes: int) -> nn.Sequential:
    from edge_ee.models.small_cnn import small_cnn
    return small_cnn(in_channels, num_classes)


MODELS: dict[str, ModelFactory] = {
    "compact-cnn": ModelFactory("compact-cnn", compact_cnn,
                                {"before": 0, "middle": 1, "after": 2}, 4),
    "mlp": ModelFactory("mlp", mlp, {"before": 0, "middle": 1, "after": 2}, 3),
    "small-cnn": ModelFactory("small-cnn", _small_cnn, {"before": 1, "middle": 2, "after": 3}, 5),
}


def get_factory(name: str) -> ModelFactory:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name]


def make_model(name: str, in_channels: int, num_classes: int, seed: int = 0) -> nn.Sequential:
    """A fresh, seeded model of the named architecture."""
    return get_factory(name)(in_channels, num_classes, seed)


def to_exitnet(seq: nn.Sequential, input_shape: tuple[int, ...], name: str) -> ExitNet:
    """Cut after every child but the last (the classifier): exit points 0..len-2."""
    from edge_ee.exitnet import from_sequential
    return from_sequential(seq, list(range(len(seq) - 1)), input_shape, name)


def exit_point(name: str, location: str | int) -> int:
    """`before` / `middle` / `after` (or an exit index, also as a string) → exit index."""
    fac = get_factory(name)
    n = fac.n_exits
    if isinstance(location, str) and location.strip().lstrip("-").isdigit():
        location = int(location)
    if isinstance(location, int):
        if not 0 <= location < n:
            raise ConfigError(f"exit location {location} does not exist in {name}; choose "
                              f"0..{n - 1} or one of {LOCATIONS}")
        return location
    if location not in fac.locations:
        raise ConfigError(f"exit location {location!r} does not exist in {name}; choose "
                          f"0..{n - 1} or one of {LOCATIONS}")
    return fac.locations[location]
