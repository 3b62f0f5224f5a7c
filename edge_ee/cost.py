"""Compute cost: FLOPs of every stage and exit head, and the expected cost per sample.

Stage and head FLOPs are counted by `torch.utils.flop_counter` (2 FLOPs per MAC) on a
batch-1 input; element-wise work that counter does not see (pooling, the E2CM distance
beyond its MatMul, softmax) is added analytically by each head (`extra_flops`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from edge_ee.exitnet import ExitNet
from edge_ee.exits.heads import ExitHead


def count_flops(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class CostTable:
    """FLOPs per stage, of the final classifier, and of each exit head (0 where none)."""

    stage_flops: tuple[int, ...]
    classifier_flops: int
    head_flops: tuple[int, ...]

    @property
    def full_flops(self) -> int:
        """The original network: all stages plus its classifier, no exit heads."""
        return sum(self.stage_flops) + self.classifier_flops

    def cum_backbone(self) -> np.ndarray:
        """FLOPs to reach exit e (e = 0..E-1), and the full network at index E."""
        cum = np.cumsum(self.stage_flops, dtype=np.float64)
        return np.append(cum, self.full_flops)

    def heads_array(self) -> np.ndarray:
        """Head FLOPs per exit with 0 for the final classifier (counted in the backbone)."""
        return np.append(np.asarray(self.head_flops, np.float64), 0.0)

    def to_json(self) -> dict:
        return {"stage_flops": list(self.stage_flops), "classifier_flops": self.classifier_flops,
                "head_flops": list(self.head_flops), "full_flops": self.full_flops}


def cost_table(net: ExitNet, heads: Sequence[ExitHead | None]) -> CostTable:
    net.eval()
    x = torch.zeros((1, *net.input_shape))
    stage_flops, head_flops = [], []
    for stage, head in zip(net.stages, heads, strict=True):
        stage_flops.append(count_flops(stage, x))
        with torch.no_grad():
            x = stage(x)
        head_flops.append(0 if head is None else
                          count_flops(head, x) + head.extra_flops(tuple(x.shape[1:])))
    return CostTable(tuple(stage_flops), count_flops(net.classifier, x), tuple(head_flops))


def expected_cost(costs: CostTable, exits: np.ndarray, enabled: np.ndarray) -> np.ndarray:
    """Per-sample FLOPs: stages run up to the exit taken plus every enabled head evaluated."""
    head_cum = np.cumsum(costs.heads_array() * enabled)
    return costs.cum_backbone()[exits] + head_cum[exits]
