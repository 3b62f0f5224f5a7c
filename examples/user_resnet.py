"""A CIFAR ResNet written as a user would, outside the edge-ee package (no edge_ee imports).

Used by `examples/own_model.py` and the tests: `--model examples/user_resnet.py:resnet20`
with `--weights ../shared/data/resnet-cifar10/resnet20.npz` (the keys match).
"""

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2 if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        short = x if self.pad is None else F.pad(x[:, :, ::2, ::2],
                                                 (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + short)


class ResNet(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        chans, layers, cin = (16, 32, 64), [], 16
        for s, c in enumerate(chans):
            blocks = [Block(cin if i == 0 else c, c, 2 if (i == 0 and s > 0) else 1)
                      for i in range(n)]
            layers.append(nn.Sequential(*blocks))
            cin = c
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


def resnet20() -> ResNet:
    return ResNet(3)


def resnet56() -> ResNet:
    return ResNet(9)
