"""MobileNetV2 adapted to 32x32 CIFAR images, written as a user would (no edge_ee imports).

torchvision's MobileNetV2 (inverted residuals, expansion 6, ReLU6, linear bottlenecks) with
the CIFAR changes of common practice: the stem is a stride-1 3x3 convolution and the first
two stride-2 stages are stride 1, so a 32x32 input reaches the head at 4x4. `width` scales
every channel count (rounded to a multiple of 8), as torchvision's `width_mult`.

    edge-ee inspect --model examples/user_mobilenetv2.py:mobilenetv2 --input-shape 3,32,32
"""

import torch
from torch import nn

# (expansion t, channels c, repeats n, stride s) — torchvision's table, CIFAR strides
CONFIG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))


def _ch(c: float) -> int:
    return max(8, int(c + 4) // 8 * 8)


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU6(inplace=True)) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [conv_bn(cin, hidden, 1)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   conv_bn(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        cin = _ch(32 * width)
        blocks: list[nn.Module] = [conv_bn(3, cin, 3)]
        for t, c, n, s in CONFIG:
            cout = _ch(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        self.last = max(1280, _ch(1280 * width)) if width > 1 else _ch(1280 * width)
        blocks.append(conv_bn(cin, self.last, 1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def mobilenetv2() -> MobileNetV2:
    """Width 0.5 (about 25 MFLOPs at 32x32): small enough to train for minutes on a CPU."""
    return MobileNetV2(width=0.5)
