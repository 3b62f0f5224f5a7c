"""Cut an ExitNet with calibrated heads into segment specs: the stages up to a kept exit + its head.

Only exits that calibration keeps (finite threshold) become segment boundaries; the
blocks between two kept exits are fused into one segment, so a bundle pays one
`session.run` per kept exit, not per block. The last segment ends with the network's
own classifier. Every module is built in eval mode (export restores the training flag
recursively, and BatchNorm in train mode drifts, see DESIGN.md).

Each segment becomes a neutral `converters.spec.SegmentSpec` (module, example feed,
named outputs, dynamic batch axis, FLOPs with the head's own cost, parameters, the
manifest's exit description, and how each output is compared with torch), so the
converters export and validate it without knowing what an ExitNet is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from converters.flops import count_flops
from converters.spec import Compare, DynamicAxis, SegmentSpec
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


BATCH = {"x": {0: DynamicAxis("batch", max=65536)}}
EXIT_INFO_OUTPUTS = {"prediction": "int64 class index", "confidence": "float32",
                     "exit": "bool: confidence > threshold"}
FINAL_INFO_OUTPUTS = {"prediction": "int64", "confidence": "max softmax", "logits": "float32"}


def _exit_tie_scores(head: ExitHead):  # -> Callable[[Mapping], np.ndarray]
    @torch.no_grad()
    def scores(ref: Mapping[str, np.ndarray]) -> np.ndarray:
        z = head.raw_scores(torch.from_numpy(ref["feature"])) * head.scorer.scale
        return z.numpy()
    return scores


def _final_tie_scores(ref: Mapping[str, np.ndarray]) -> np.ndarray:
    return ref["logits"]


def exit_spec(module: ExitSegment, stage_names: list[str], exit_index: int,
              example: torch.Tensor) -> SegmentSpec:
    """The spec of a segment that ends at an early exit (feature passed on)."""
    head = module.head
    with torch.no_grad():
        feat = module.stages(example)
    flops = count_flops(module, example) + head.extra_flops(tuple(feat.shape[1:]))
    info = {"kind": head.scorer.kind if head.scorer.kind != "linear" else "lda",
            "point": stage_names[-1], "exit_index": exit_index,
            "confidence": head.confidence_name, "threshold": float(head.threshold),
            "outputs": dict(EXIT_INFO_OUTPUTS)}
    compare = {"feature": Compare("float"), "confidence": Compare("confidence"),
               "prediction": Compare("decision", tie_scores=_exit_tie_scores(head)),
               "exit": Compare("decision", near="confidence", threshold=float(head.threshold))}
    return SegmentSpec(module, {"x": example}, ("x",), EXIT_OUTPUTS, int(flops),
                       _params(module), info, stage_names, compare, BATCH, passes_on="feature")


def final_spec(module: FinalSegment, stage_names: list[str], example: torch.Tensor) -> SegmentSpec:
    """The spec of the last segment (the network's own classifier)."""
    info = {"kind": "final", "point": "classifier", "threshold": None,
            "outputs": dict(FINAL_INFO_OUTPUTS)}
    compare = {"logits": Compare("float"), "confidence": Compare("confidence"),
               "prediction": Compare("decision", tie_scores=_final_tie_scores)}
    return SegmentSpec(module, {"x": example}, ("x",), FINAL_OUTPUTS,
                       int(count_flops(module, example)), _params(module), info, stage_names,
                       compare, BATCH)


def _params(module: nn.Module) -> int:
    """Parameters, plus the head's constants (class means etc. are buffers)."""
    n = sum(p.numel() for p in module.parameters())
    return int(n + sum(b.numel() for name, b in module.named_buffers() if "head" in name))


def _example(net: ExitNet, example: torch.Tensor | None) -> torch.Tensor:
    return torch.zeros((1, *net.input_shape)) if example is None else example[:1]


def plan_segments(net: ExitNet, heads: Sequence[ExitHead | None],
                  example: torch.Tensor | None = None) -> list[SegmentSpec]:
    """Segments ending at every enabled exit, then one final segment.

    `example`: a model input (batch 1 used) for the example feeds and FLOPs; zeros by default."""
    net.eval()
    specs: list[SegmentSpec] = []
    start = 0
    x = _example(net, example)
    for i, head in enumerate(heads):
        if head is None or not head.enabled:
            continue
        mod = ExitSegment(list(net.stages[start : i + 1]), head).eval()
        specs.append(exit_spec(mod, list(net.exit_names[start : i + 1]), i, x))
        with torch.no_grad():
            x = mod(x)[0]
        start = i + 1
    mod = FinalSegment(list(net.stages[start:]), net.classifier).eval()
    specs.append(final_spec(mod, [*net.exit_names[start:], "classifier"], x))
    return specs


def monolithic_plan(net: ExitNet, example: torch.Tensor | None = None) -> list[SegmentSpec]:
    """The whole network as one final segment (the baseline for split overhead)."""
    net.eval()
    mod = FinalSegment(list(net.stages), net.classifier).eval()
    return [final_spec(mod, [*net.exit_names, "classifier"], _example(net, example))]
