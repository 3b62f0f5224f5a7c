"""A small sequential CNN for 28x28 grey images (Fashion-MNIST), with shipped weights.

The weights in `edge_ee/assets/fashion_cnn.pt` were trained by
`edge-ee train-cnn` (see `edge_ee/train_cnn.py`) on the Fashion-MNIST train split;
their sha256 is checked before they are used.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from torch import nn

from edge_ee.models.weights import load_into, read_state_dict

ASSET = "fashion_cnn.pt"
ASSET_SHA256: str | None = "02823d0780d6130f9b1c8a99a6da85de41e8aeefdc66f89ff009afa96b0860d4"


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


def small_cnn(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """Five conv blocks (16-32-32-64-64 channels, two stride-2) + pool + linear."""
    return nn.Sequential(
        conv_bn(in_channels, 16),
        conv_bn(16, 32, 2),
        conv_bn(32, 32),
        conv_bn(32, 64, 2),
        conv_bn(64, 64),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)),
    )


def asset_path() -> Path:
    return Path(str(resources.files("edge_ee") / "assets" / ASSET))


def load_small_cnn(path: str | Path | None = None) -> nn.Sequential:
    """The shipped Fashion-MNIST CNN (checksum verified), or weights from `path`."""
    p = Path(path) if path else asset_path()
    model = small_cnn()
    load_into(model, read_state_dict(p, ASSET_SHA256 if path is None else None), str(p))
    return model.eval()
