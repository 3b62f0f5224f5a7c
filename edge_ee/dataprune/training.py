"""Training from scratch for dataset pruning: one seeded SGD loop with per-sample hooks.

The evaluation harness trains a fresh model on a kept set; EL2N and forgetting need the
same loop with access to which samples were in each batch (`on_batch(indices, logits,
labels)`). SGD with momentum and a one-cycle learning-rate schedule over a budget given
in epochs (fractions allowed: `steps = ceil(epochs · n / batch_size)`). No augmentation:
every method is trained the same way, and the budgets here are a few epochs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edge_ee.data import ImageSplit
from edge_ee.errors import ConfigError, DataError

BatchHook = Callable[[np.ndarray, torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class TrainConfig:
    """One from-scratch training run."""

    epochs: float = 4.0
    batch_size: int = 128
    lr: float = 0.1  # peak of the one-cycle schedule
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.epochs > 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")

    def steps(self, n: int) -> int:
        return max(1, math.ceil(self.epochs * n / self.batch_size))


def tensors(data: ImageSplit, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float32 NCHW images and int64 labels of the samples `idx`."""
    mean = np.asarray(data.mean, np.float32)
    std = np.asarray(data.std, np.float32)
    x = (data.images[idx].astype(np.float32) / 255.0 - mean) / std
    return (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
            torch.from_numpy(data.labels[idx]))


def index_batches(n: int, batch_size: int, steps: int, seed: int):
    """`steps` batches of indices, a fresh seeded permutation each pass over range(n)."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < steps:
        perm = rng.permutation(n)
        for i in range(0, n, batch_size):
            if done >= steps:
                return
            yield perm[i : i + batch_size]
            done += 1


def fit(model: nn.Module, data: ImageSplit, cfg: TrainConfig,
        loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
        | None = None, on_batch: BatchHook | None = None, desc: str | None = None,
        progress: bool = True) -> float:
    """Train `model` in place; returns wall seconds.

    `loss_fn(model, x, y) -> (loss, logits used for on_batch)`; default cross-entropy on
    `model(x)`. `on_batch` sees each batch's indices, detached logits (train mode, before
    the update — as forgetting events are defined) and labels.
    """
    if len(data) == 0:
        raise DataError("cannot train on an empty set; lower the pruning ratio")
    torch.manual_seed(cfg.seed)
    steps = cfg.steps(len(data))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps,
                                                pct_start=0.25)
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(total=steps, desc=desc, disable=not progress or desc is None, unit="step",
               leave=False)
    for idx in index_batches(len(data), cfg.batch_size, steps, cfg.seed):
        x, y = tensors(data, idx)
        if loss_fn is None:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        else:
            loss, logits = loss_fn(model, x, y)
        if on_batch is not None:
            on_batch(idx, logits.detach(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update()
    bar.close()
    model.eval()
    return time.perf_counter() - t0


@torch.no_grad()
def predict(model: nn.Module, data: ImageSplit, batch_size: int = 512,
            outputs: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, ...]] | None = None
            ) -> list[np.ndarray]:
    """Softmax probabilities (N, K) of every output of `model` (one array per output)."""
    model.eval()
    chunks: list[list[np.ndarray]] = []
    for i in range(0, len(data), batch_size):
        x, _ = tensors(data, np.arange(i, min(i + batch_size, len(data))))
        outs = outputs(model, x) if outputs is not None else model(x)
        outs = outs if isinstance(outs, tuple) else (outs,)
        if not chunks:
            chunks = [[] for _ in outs]
        for c, o in zip(chunks, outs, strict=True):
            c.append(F.softmax(o, 1).numpy())
    return [np.concatenate(c) for c in chunks]


def accuracy(model: nn.Module, data: ImageSplit, batch_size: int = 512) -> float:
    """Top-1 accuracy of `model` (its last output when it returns several)."""
    probs = predict(model, data, batch_size)[-1]
    return float((probs.argmax(1) == data.labels).mean())
