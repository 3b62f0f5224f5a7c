"""Candidate exits carried in a bundle, so the device can measure what each one costs there.

`edge-ee build --candidates` adds, beside the bundle's segments, the graphs that
`edge-ee-run BUNDLE --measure-overheads` times (`device_runners/overheads.py`):

* `cand_full`: the whole network as one graph (the reference);
* per distinct feature shape among the exits with a head, the network cut in two at the
  middle exit of that shape (the probe, as `edge_ee.boundary` does on the host):
  `cand_b{m}_first` (stages up to exit m and its head) and `cand_b{m}_rest`;
* `cand_h{i}`: every exit's head alone (feature → prediction, confidence, exit flag);
* with ONNX, per probe also `cand_b{m}_ingraph.onnx`: `first` and `rest` assembled into one
  graph with the exit's ONNX `If`, exit switched off (`converters.ingraph`, written by the
  bundle writer from the exported files), so the device measures the in-graph strategy's
  cost of an exit as well as the split's.

The manifest's `candidates` section lists them with the candidates' **identity**: the
model's name, input shape and FLOPs, and per exit its index, point, head (kind,
confidence, FLOPs) and feature shape. `edge-ee build --overheads FILE` recomputes the
identity of the model it builds and refuses a file measured on other exits
(`edge_ee.overheads`). Weights are not part of it: boundary costs depend on the
architecture and the heads' shapes, not on trained values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from converters.flops import count_flops
from converters.spec import DynamicAxis, SegmentSpec
from edge_ee.cost import CostTable
from edge_ee.exitnet import ExitNet
from edge_ee.exits.heads import ExitHead
from edge_ee.segments import EXIT_OUTPUTS, FINAL_OUTPUTS, ExitSegment, FinalSegment

HEAD_OUTPUTS = ("prediction", "confidence", "exit")
_BATCH = {"x": {0: DynamicAxis("batch", max=65536)}}


class HeadOnly(nn.Module):
    """feature → (prediction, confidence, exit flag): one exit head as a graph of its own."""

    def __init__(self, head: ExitHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.head(f)


def feature_shapes(net: ExitNet) -> list[tuple[int, ...]]:
    """The feature shape (without batch) after every stage."""
    net.eval()
    shapes = []
    with torch.no_grad():
        f = torch.zeros((1, *net.input_shape))
        for stage in net.stages:
            f = stage(f)
            shapes.append(tuple(int(d) for d in f.shape[1:]))
    return shapes


def shape_groups(net: ExitNet, heads: Sequence[ExitHead | None]) -> dict[tuple[int, ...], list[int]]:
    """Exits with a head grouped by feature shape, in network order."""
    shapes = feature_shapes(net)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, h in enumerate(heads):
        if h is not None:
            groups.setdefault(shapes[i], []).append(i)
    return groups


def candidate_identity(net: ExitNet, heads: Sequence[ExitHead | None], costs: CostTable
                       ) -> dict[str, Any]:
    """What the candidates' costs depend on (see the module docstring)."""
    shapes = feature_shapes(net)
    return {"model": net.name, "input_shape": [int(d) for d in net.input_shape],
            "full_flops": int(costs.full_flops),
            "exits": [{"exit_index": i, "point": net.exit_names[i], "kind": h.scorer.kind,
                       "confidence": h.confidence_name, "head_flops": int(costs.head_flops[i]),
                       "feature_shape": list(shapes[i])}
                      for i, h in enumerate(heads) if h is not None]}


def _spec(module: nn.Module, example: torch.Tensor, outputs: tuple[str, ...], what: str
          ) -> SegmentSpec:
    module.eval()
    with torch.no_grad():
        flops = int(count_flops(module, example))
    return SegmentSpec(module, {"x": example}, ("x",), outputs, flops,
                       sum(p.numel() for p in module.parameters()), {"kind": "candidate",
                                                                     "what": what},
                       [], dynamic_axes=_BATCH)


def candidate_graphs(net: ExitNet, heads: Sequence[ExitHead | None], costs: CostTable,
                     ingraph: bool = True) -> tuple[dict[str, SegmentSpec], dict[str, Any]]:
    """(extra graphs by name, the manifest's `candidates` section) for every exit with a head.
    `ingraph`: also plan each probe's in-graph file (ONNX bundles)."""
    net.eval()
    x = torch.zeros((1, *net.input_shape))
    graphs = {"cand_full": _spec(FinalSegment(list(net.stages), net.classifier), x,
                                 FINAL_OUTPUTS, "the whole network")}
    groups, head_names = [], {}
    for shape, members in shape_groups(net, heads).items():
        m = members[len(members) // 2]
        first = ExitSegment(list(net.stages[: m + 1]), heads[m]).eval()
        with torch.no_grad():
            f = first(x)[0]
        rest = FinalSegment(list(net.stages[m + 1 :]), net.classifier)
        graphs[f"cand_b{m}_first"] = _spec(first, x, EXIT_OUTPUTS, f"stages ..{m} + head {m}")
        graphs[f"cand_b{m}_rest"] = _spec(rest, f, FINAL_OUTPUTS, f"stages {m + 1}.. + classifier")
        for i in members:
            name = f"cand_h{i}"
            graphs[name] = _spec(HeadOnly(heads[i]), f, HEAD_OUTPUTS, f"head {i} alone")
            head_names[str(i)] = name
        groups.append({"feature_shape": list(shape), "exits": members, "probe": m,
                       "first": f"cand_b{m}_first", "rest": f"cand_b{m}_rest",
                       **({"ingraph": f"cand_b{m}_ingraph.onnx"} if ingraph else {})})
    section = {"identity": candidate_identity(net, heads, costs), "full": "cand_full",
               "groups": groups, "heads": head_names,
               "measure": "edge-ee-run BUNDLE --measure-overheads --out overheads.json"}
    return graphs, section
