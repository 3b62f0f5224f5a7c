"""CIFAR ResNets (He et al. 2016, option-A shortcuts) of any depth 6n+2, and their npz weights.

Architecture as in `../shared/data/README.md`: conv3x3(3→16)+BN+ReLU, three stages of n
BasicBlocks (16/32/64 channels, stride 2 at the first block of stages 2 and 3), global
average pool, linear(64→10). The option-A shortcut has no weights: subsample by 2 and
zero-pad channels by planes/4 on each side.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edge_ee.errors import ModelError
from edge_ee.models.weights import load_into, read_state_dict

# sha256 of the pretrained files shipped in ../shared/data/resnet-cifar10 (verified before use).
KNOWN_SHA256 = {
    "resnet20.npz": "ef390b25c0bd77a1d993ba3e82815a15587ea4ba6d00f99503aecbeccd137822",
    "resnet56.npz": "f222bdf1125caa30541208723397bf1b29cd1c875c2fb8e2afd36d6a2c2e0161",
}


class ShortcutA(nn.Module):
    """Option-A shortcut: x[:, :, ::2, ::2] zero-padded by planes/4 channels on each side."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = (
            ShortcutA(planes) if stride != 1 or in_planes != planes else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))


class PoolLinear(nn.Module):
    """Global average pool + linear classifier."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(2, 3)))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; module names match the shipped npz keys."""

    def __init__(self, depth: int = 56, num_classes: int = 10) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ModelError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110…), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes, layers = 16, []
        for i, width in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(planes, width, stride))
                planes = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(out.mean(dim=(2, 3)))


def depth_from_state(state: dict[str, torch.Tensor]) -> int:
    n = len({k.split(".")[1] for k in state if k.startswith("layer1.")})
    if n == 0:
        raise ModelError("weights have no 'layer1.*' keys; not a CIFAR ResNet state_dict")
    return 6 * n + 2


def load_resnet_cifar(path: str | Path, depth: int | None = None) -> CifarResNet:
    """Build a CifarResNet and load `resnet{depth}.npz`; the depth is read from the keys."""
    p = Path(path)
    state = read_state_dict(p, KNOWN_SHA256.get(p.name))
    model = CifarResNet(depth or depth_from_state(state), num_classes=_classes(state))
    load_into(model, state, str(p))
    return model.eval()


def _classes(state: dict[str, torch.Tensor]) -> int:
    w = state.get("linear.weight")
    if w is None:
        raise ModelError("weights have no 'linear.weight'; not a CIFAR ResNet state_dict")
    return int(w.shape[0])
