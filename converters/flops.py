"""FLOPs of a module on example inputs, counted by `torch.utils.flop_counter` (2 per MAC)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one forward pass of `module` on `inputs` (element-wise work not counted)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())
