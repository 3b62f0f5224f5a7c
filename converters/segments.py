"""Cut an ExitNet with calibrated heads into segments: the stages up to a kept exit + its head.

Only exits that calibration keeps (finite threshold) become segment boundaries; the
blocks between two kept exits are fused into one segment, so a bundle pays one
`session.run` per kept exit, not per block. The last segment ends with the network's
own classifier. Every module is built in eval mode (export restores the training flag
recursively, and BatchNorm in train mode drifts, see DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edge_ee.exitnet import ExitNet
from edge_ee.exits.heads import ExitHead, FinalHead

EXIT_OUTPUTS = ("feature", "prediction", "confidence", "exit")
FINAL_OUTPUTS = ("prediction", "confidence", "logits")


class ExitSegment(nn.Module):
    """x → (feature for the next segment, prediction, confidence, exit flag)."""

    def __init__(self, stages: Sequence[nn.Module], head: ExitHead) -> None:
        super().__init__()
        self.stages = nn.Sequential(*stages)
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.stages(x)
        pred, conf, flag = self.head(f)
        return f, pred, conf, flag


class FinalSegment(nn.Module):
    """x → (prediction, confidence, logits) through the network's own classifier."""

    def __init__(self, stages: Sequence[nn.Module], classifier: nn.Module) -> None:
        super().__init__()
        self.stages = nn.Sequential(*stages)
        self.head = FinalHead(classifier)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.head(self.stages(x))


@dataclass
class SegmentPlan:
    module: nn.Module
    stage_names: list[str]
    exit_index: int | None  # index of the ExitNet exit point, None for the final segment
    head: ExitHead | None

    @property
    def output_names(self) -> tuple[str, ...]:
        return EXIT_OUTPUTS if self.head is not None else FINAL_OUTPUTS


def plan_segments(net: ExitNet, heads: Sequence[ExitHead | None]) -> list[SegmentPlan]:
    """Segments ending at every enabled exit, then one final segment."""
    net.eval()
    plans: list[SegmentPlan] = []
    start = 0
    for i, head in enumerate(heads):
        if head is None or not head.enabled:
            continue
        stages = list(net.stages[start : i + 1])
        plans.append(SegmentPlan(ExitSegment(stages, head).eval(),
                                 net.exit_names[start : i + 1], i, head))
        start = i + 1
    plans.append(SegmentPlan(FinalSegment(list(net.stages[start:]), net.classifier).eval(),
                             [*net.exit_names[start:], "classifier"], None, None))
    return plans


def monolithic_plan(net: ExitNet) -> list[SegmentPlan]:
    """The whole network as one final segment (the baseline for split overhead)."""
    net.eval()
    return [SegmentPlan(FinalSegment(list(net.stages), net.classifier).eval(),
                        [*net.exit_names, "classifier"], None, None)]
