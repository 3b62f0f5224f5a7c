"""The convolutional autoencoder whose encoder is the clustering backbone (Fashion-MNIST).

Encoder: five conv-BN-ReLU blocks (8-16-16-32-32 channels, stride 2 in blocks 2 and 4,
built with `edge_ee.models.small_cnn.conv_bn`) and a linear map of the 32×7×7 feature
to a `EMBED_DIM`-dimensional embedding. Each block is an exit point. The decoder
mirrors it (linear, two stride-2 transposed convs, a 3×3 conv) and is only needed to
train: the reconstruction loss (MSE on normalised pixels) is the only objective, no
labels are used. Only the encoder is shipped (`edge_ee/assets/fashion_ae_encoder.pt`,
its sha256 in the `.sha256` file beside it, checked before loading).

The shipped asset was made on 2 (heavily shared) CPU cores with
`python -m edge_ee.clustering.autoencoder --epochs 2 --train-samples 15000`
(a seeded random 15k of the 60k training images: that is what the CPU time allowed).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_ee.data import ImageSplit
from edge_ee.errors import ModelError
from edge_ee.exits.fit import batches
from edge_ee.models.small_cnn import conv_bn
from edge_ee.models.weights import load_into, read_state_dict, save_with_sidecar, sidecar_digest

log = logging.getLogger(__name__)

ASSET = "fashion_ae_encoder.pt"
CHANNELS = (8, 16, 16, 32, 32)
STRIDES = (1, 2, 1, 2, 1)
EMBED_DIM = 10


def encoder(in_channels: int = 1, embed_dim: int = EMBED_DIM) -> nn.Sequential:
    """Five conv blocks (the exit points) and the embedding (`Flatten`, `Linear`) as child 5."""
    blocks, cin = [], in_channels
    for c, s in zip(CHANNELS, STRIDES, strict=True):
        blocks.append(conv_bn(cin, c, s))
        cin = c
    return nn.Sequential(*blocks, nn.Sequential(nn.Flatten(), nn.Linear(cin * 7 * 7, embed_dim)))


def decoder(out_channels: int = 1, embed_dim: int = EMBED_DIM) -> nn.Sequential:
    a, _, c, _, e = CHANNELS
    return nn.Sequential(
        nn.Linear(embed_dim, e * 7 * 7), nn.Unflatten(1, (e, 7, 7)), nn.ReLU(),
        nn.ConvTranspose2d(e, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU(),
        nn.ConvTranspose2d(c, a, 4, 2, 1), nn.BatchNorm2d(a), nn.ReLU(),
        nn.Conv2d(a, out_channels, 3, 1, 1),
    )


def train_autoencoder(train: ImageSplit, epochs: int = 3, batch_size: int = 256,
                      lr: float = 3e-3, seed: int = 0, progress: bool = True) -> nn.Sequential:
    """Train encoder + decoder on reconstruction only (labels never read); return the encoder."""
    if epochs < 1:
        raise ModelError(f"epochs must be ≥ 1, got {epochs}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ch = train.images.shape[-1]
    enc, dec = encoder(ch), decoder(ch)
    params = [*enc.parameters(), *dec.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    enc.train()
    dec.train()
    for ep in range(epochs):
        total, n = 0.0, 0
        for x, _ in batches(train.subset(rng.permutation(len(train))), batch_size,
                            f"autoencoder epoch {ep + 1}/{epochs}", progress):
            loss = F.mse_loss(dec(enc(x)), x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + float(loss) * len(x), n + len(x)
        log.info("autoencoder epoch %d/%d: reconstruction MSE %.4f", ep + 1, epochs, total / n)
    return enc.eval()


def asset_path() -> Path:
    return Path(str(resources.files("edge_ee") / "assets" / ASSET))


def save_encoder(model: nn.Module, path: str | Path) -> str:
    """The state_dict and `<path>.sha256`, both written atomically; returns the digest."""
    return save_with_sidecar({k: v.detach().clone() for k, v in model.state_dict().items()},
                             path)


def load_encoder(path: str | Path | None = None) -> tuple[nn.Sequential, str]:
    """The encoder (eval mode) and its sha256, verified against `<path>.sha256` first."""
    p = Path(path) if path else asset_path()
    if not p.is_file():
        raise ModelError(f"encoder weights {p} not found; train them with "
                         "`python -m edge_ee.clustering.autoencoder --out FILE`")
    digest = sidecar_digest(p)
    model = encoder()
    load_into(model, read_state_dict(p, digest), str(p))
    return model.eval(), digest


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - remakes the asset
    from edge_ee.data import load_fashion_mnist
    ap = argparse.ArgumentParser(description="train the Fashion-MNIST clustering autoencoder")
    ap.add_argument("--data", default=None)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-samples", type=int, default=None,
                    help="train on this many random training images (default: all 60k)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=asset_path())
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    train = load_fashion_mnist("train", a.data)
    if a.train_samples is not None and a.train_samples < len(train):
        rng = np.random.default_rng(a.seed)
        train = train.subset(np.sort(rng.choice(len(train), a.train_samples, replace=False)))
    enc = train_autoencoder(train, a.epochs, seed=a.seed)
    digest = save_encoder(enc, a.out)
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes), sha256 {digest}; "
          f"{hashlib.sha256(a.out.read_bytes()).hexdigest() == digest}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
