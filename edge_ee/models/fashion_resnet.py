"""The demo's Fashion-MNIST network: a small residual CNN (~100 MFLOPs at 28×28), shipped.

Sized so that an early exit pays for the segment boundary it adds: on one onnxruntime
thread a boundary costs ~50–150 µs, a few per cent of this network's time (the 11 MFLOPs
`small_cnn` is too small: a boundary there costs as much as a third of the network).

A `nn.Sequential` of six children: stem (24@28²), four residual blocks (64@14²/2,
64@14², 128@7²/2, 128@7²), then pool + linear, so `from_sequential` cuts it after any of
the first five (`CUTS` takes the first four: an exit just before the classifier saves
nothing).
The weights in `edge_ee/assets/fashion_resnet.pt` were trained by `edge-ee train-cnn
--arch fashion-resnet` (see `edge_ee/train_cnn.py`) on the Fashion-MNIST train split;
their sha256 (`fashion_resnet.pt.sha256` beside them) is checked before they are loaded.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from torch import nn

from edge_ee.models.small_cnn import conv_bn
from edge_ee.models.weights import load_into, read_state_dict, sidecar_digest

ASSET = "fashion_resnet.pt"
CUTS = (0, 1, 2, 3)  # exit points: after the stem and after each residual block but the last


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity (or 1×1 strided) shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.short(x))


def fashion_resnet(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """stem 24 → block 64/2 → block 64 → block 128/2 → block 128 → pool + linear (101 MFLOPs)."""
    return nn.Sequential(
        conv_bn(in_channels, 24),
        BasicBlock(24, 64, 2),
        BasicBlock(64, 64),
        BasicBlock(64, 128, 2),
        BasicBlock(128, 128),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes)),
    )


def asset_path() -> Path:
    return Path(str(resources.files("edge_ee") / "assets" / ASSET))


def load_fashion_resnet(path: str | Path | None = None) -> nn.Sequential:
    """The shipped network (sha256 checked against its sidecar), or weights from `path`."""
    p = Path(path) if path else asset_path()
    model = fashion_resnet()
    load_into(model, read_state_dict(p, sidecar_digest(p) if path is None else None), str(p))
    return model.eval()
