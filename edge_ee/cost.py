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

from converters.flops import count_flops
from edge_ee.exitnet import ExitNet
from edge_ee.exits.heads import ExitHead


@dataclass(frozen=True)
class CostTable:
    """FLOPs per stage, of the final classifier, and of each exit head (0 where none)."""

    stage_flops: tuple[int, ...]
    classifier_flops: int
    head_flops: tuple[int, ...]
    # FLOPs-equivalent charged per kept exit for the segment boundary it adds, one value for
    # all exits or one per exit: 0 counts pure FLOPs; `edge_ee.boundary` measures it.
    exit_overhead_flops: float | tuple[float, ...] = 0.0

    @property
    def full_flops(self) -> int:
        """The original network: all stages plus its classifier, no exit heads."""
        return sum(self.stage_flops) + self.classifier_flops

    def cum_backbone(self) -> np.ndarray:
        """FLOPs to reach exit e (e = 0..E-1), and the full network at index E."""
        cum = np.cumsum(self.stage_flops, dtype=np.float64)
        return np.append(cum, self.full_flops)

    def heads_array(self) -> np.ndarray:
        """Head FLOPs (+ call overhead) per exit; 0 for the final classifier (in the backbone)."""
        heads = np.asarray(self.head_flops, np.float64) + np.asarray(self.exit_overhead_flops,
                                                                     np.float64)
        return np.append(heads, 0.0)

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


def measure_call_overhead_flops(full_onnx: str, full_flops: int, runs: int = 200) -> float:
    """FLOPs-equivalent of one extra `session.run` on this machine (onnxruntime, 1 thread).

    Times the full network as one graph and a trivial graph with the same input, and
    converts the trivial call's median time with the full graph's FLOPs per second.
    """
    import tempfile
    import time

    from onnx import TensorProto, helper, save

    from device_runners.backends import ort_session

    full = ort_session(full_onnx, 1)
    inp = full.get_inputs()[0]
    shape = [1, *inp.shape[1:]]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "noop",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    with tempfile.TemporaryDirectory() as tmp:
        save(model, f"{tmp}/noop.onnx")
        noop = ort_session(f"{tmp}/noop.onnx", 1)
    x = np.zeros(shape, np.float32)
    t_full, t_noop = [], []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        full.run(None, {inp.name: x})
        t1 = time.perf_counter_ns()
        noop.run(None, {"x": x})
        t_noop.append(time.perf_counter_ns() - t1)
        t_full.append(t1 - t0)
    return float(np.median(t_noop) / np.median(t_full) * full_flops)
