"""Small networks built and trained inside tests (not shipped in the repository)."""

from __future__ import annotations

import torch
from torch import nn


def tiny_cnn(train, epochs: int = 2, lr: float = 1e-2) -> nn.Sequential:
    """A seeded 4-stage CNN trained with Adam for `epochs` epochs on `train` (an ImageSplit
    of 1×28×28 Fashion-MNIST images; about a second per epoch on 3000 images)."""
    torch.manual_seed(7)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)),
    )
    x, y = torch.from_numpy(train.normalised()), torch.from_numpy(train.labels).long()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()
