"""Train `EarlyExitSegNet` on the CamVid train split on CPU (1 thread) within a time budget.

Loss: the sum over exits of cross-entropy on bilinearly upsampled exit logits (void
ignored), with mild class weights (inverse square root of train pixel frequency,
normalised to mean 1). Augmentation: random horizontal flip. AdamW + cosine schedule.

    python -m edge_ee.segmentation.train --epochs 30 --budget-s 600
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from converters.progress import progress
from edge_ee.log import configure_logging
from edge_ee.segmentation.data import IGNORE_INDEX, NUM_CLASSES, load_camvid, normalize_images
from edge_ee.segmentation.model import (
    WEIGHTS_FILE,
    EarlyExitSegNet,
    SegNetConfig,
    save_weights,
    upsample_logits,
)

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe (defaults = the shipped weights)."""

    epochs: int = 30
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    budget_s: float = 600.0
    seed: int = 0
    threads: int = 1


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """1/sqrt(frequency) of each class over non-void pixels, normalised to mean 1."""
    counts = np.bincount(labels[labels != IGNORE_INDEX].ravel(), minlength=NUM_CLASSES)
    freq = np.maximum(counts, 1) / max(counts.sum(), 1)
    w = 1.0 / np.sqrt(freq)
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def train(cfg: TrainConfig, net_cfg: SegNetConfig | None = None,
          data_path: str | Path | None = None, log: bool = True) -> tuple[EarlyExitSegNet, dict]:
    """Train and return (model in eval mode, info dict with wall time and epochs done)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    split = load_camvid(data_path, splits=("train",))["train"]
    x_all = torch.from_numpy(normalize_images(split.images))
    y_all = torch.from_numpy(split.labels.astype(np.int64))
    weights = class_weights(split.labels)
    model = EarlyExitSegNet(net_cfg)
    hw = model.config.image_hw
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(split)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    t0 = time.perf_counter()
    epochs_done = 0
    for epoch in progress(range(cfg.epochs), desc="train", unit="epoch", disable=not log):
        model.train()
        perm = rng.permutation(n)
        running = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = torch.from_numpy(perm[i:i + cfg.batch_size])
            xb, yb = x_all[idx], y_all[idx]
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            yb = torch.where(flip[:, None, None], yb.flip(-1), yb)
            outs = model(xb)
            loss = sum(F.cross_entropy(upsample_logits(o, hw), yb, weight=weights,
                                       ignore_index=IGNORE_INDEX) for o in outs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach()) * len(idx)
        epochs_done = epoch + 1
        elapsed = time.perf_counter() - t0
        if log:
            LOG.info("epoch %3d loss %.4f elapsed %.0fs", epochs_done, running / n, elapsed)
        if elapsed > cfg.budget_s:
            if log:
                LOG.info("time budget %.0fs reached; stopping", cfg.budget_s)
            break
    info = {"train_s": time.perf_counter() - t0, "epochs_done": epochs_done,
            "threads": cfg.threads}
    return model.eval(), info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    ap.add_argument("--budget-s", type=float, default=TrainConfig.budget_s)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default=str(WEIGHTS_FILE))
    args = ap.parse_args(argv)
    configure_logging(0)
    model, info = train(TrainConfig(epochs=args.epochs, budget_s=args.budget_s),
                        data_path=args.data)
    digest = save_weights(model, Path(args.out))
    print(f"saved {args.out} sha256 {digest} train {info['train_s']:.0f}s "
          f"epochs {info['epochs_done']}")


if __name__ == "__main__":
    main()
