"""Train the Fashion-MNIST networks whose weights edge-ee ships (`edge-ee train-cnn`).

Plain supervised training (AdamW, one-cycle schedule, random horizontal flips and
translations). `ARCHS` names the architectures: `small-cnn` (`fashion_cnn.pt`, 4 epochs)
and `fashion-resnet` (`fashion_resnet.pt`, the demo's network; made with
`OMP_WAIT_POLICY=PASSIVE python -m edge_ee.train_cnn fashion-resnet 2`, ~20 min on 2
CPU cores shared with other jobs; without PASSIVE, OpenMP spinning under load made it
~10× slower).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edge_ee.data import ImageSplit
from edge_ee.errors import ConfigError
from edge_ee.exits.fit import batches
from edge_ee.models.fashion_resnet import fashion_resnet
from edge_ee.models.small_cnn import small_cnn
from edge_ee.models.weights import save_with_sidecar

ARCHS = {"small-cnn": small_cnn, "fashion-resnet": fashion_resnet}


def _augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    if rng.random() < 0.5:
        x = x.flip(3)
    dx, dy = rng.integers(-2, 3, size=2)
    return torch.roll(x, shifts=(int(dy), int(dx)), dims=(2, 3))


def train_small_cnn(train: ImageSplit, epochs: int = 4, batch_size: int = 128, lr: float = 3e-3,
                    seed: int = 0, progress: bool = True, arch: str = "small-cnn"
                    ) -> torch.nn.Sequential:
    """Train the named architecture (`ARCHS`) from scratch on `train`."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; choose from {sorted(ARCHS)}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ARCHS[arch](train.images.shape[-1], len(train.classes))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for ep in range(epochs):
        perm = rng.permutation(len(train))
        shuffled = train.subset(perm)
        for x, y in batches(shuffled, batch_size, f"epoch {ep + 1}/{epochs}", progress):
            loss = F.cross_entropy(model(_augment(x, rng)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: ImageSplit) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches(data, 512))
    return correct / len(data)


def save_state(model: torch.nn.Module, path: str | Path) -> Path:
    """The state_dict and `<path>.sha256`, each written atomically."""
    save_with_sidecar(model.state_dict(), path)
    return Path(path)


if __name__ == "__main__":  # pragma: no cover - used to (re)make the shipped asset
    import sys

    from edge_ee.data import load_fashion_mnist
    from edge_ee.models.weights import sidecar_digest
    torch.set_num_threads(2)
    name = sys.argv[1] if len(sys.argv) > 1 else "small-cnn"
    from edge_ee.data import balanced_indices
    tr, te = load_fashion_mnist("train"), load_fashion_mnist("test")
    if len(sys.argv) > 3:  # a class-balanced subset of the training split
        tr = tr.subset(balanced_indices(tr.labels, int(sys.argv[3])))
    m = train_small_cnn(tr, epochs=int(sys.argv[2]) if len(sys.argv) > 2 else 4, arch=name)
    out = save_state(m, f"edge_ee/assets/{'fashion_cnn' if name == 'small-cnn' else 'fashion_resnet'}.pt")
    print("test accuracy", accuracy(m, te), "sha256", sidecar_digest(out))
