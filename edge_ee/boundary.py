"""What one more segment boundary costs on this machine, in FLOPs-equivalent per exit.

An exit-split bundle pays, at every kept exit, more than a bare `session.run`: the exit
head, the layout reorders a runtime does around its optimised convolutions (onnxruntime's
NCHWc pass reorders in and out of every graph) and colder caches. Measured on ResNet-56
here: 150 / 112 / 53 µs for a cut in stage 1 / 2 / 3, against ~15 µs for a bare call.

`measure_boundary_flops` exports the whole network as one graph and, for each distinct
feature shape among the exits with a head, the network cut in two at the middle such
exit (its head included); it times the two-graph chain against the one graph
(onnxruntime, 1 thread, batch 1, interleaved) and converts the difference with the
whole graph's FLOPs per second. Every exit with that feature shape is charged that cost.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from edge_ee.exitnet import ExitNet
from edge_ee.exits.heads import ExitHead


def _session(path: Path):
    from device_runners.backends import ort_session
    return ort_session(path, 1)


def measure_boundary_flops(net: ExitNet, heads: Sequence[ExitHead | None], full_flops: int,
                           runs: int = 150) -> tuple[float, ...]:
    """Per exit: FLOPs-equivalent of the boundary it adds (0 where there is no head)."""
    from converters.formats.onnx import export_onnx
    from edge_ee.segments import EXIT_OUTPUTS, FINAL_OUTPUTS, ExitSegment, FinalSegment

    net.eval()
    x = torch.randn((1, *net.input_shape), generator=torch.Generator().manual_seed(0))
    shapes: list[tuple[int, ...]] = []
    with torch.no_grad():
        f = x
        for stage in net.stages:
            f = stage(f)
            shapes.append(tuple(f.shape[1:]))
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, h in enumerate(heads):
        if h is not None:
            groups.setdefault(shapes[i], []).append(i)
    per_shape: dict[tuple[int, ...], float] = {}
    xa = x.numpy()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        root = Path(tmp)
        whole = FinalSegment(list(net.stages), net.classifier).eval()
        full = _session(export_onnx(whole, x, root / "full.onnx", FINAL_OUTPUTS))
        for shape, members in groups.items():
            m = members[len(members) // 2]
            first = ExitSegment(list(net.stages[: m + 1]), heads[m]).eval()
            rest = FinalSegment(list(net.stages[m + 1 :]), net.classifier).eval()
            a = _session(export_onnx(first, x, root / f"a{m}.onnx", EXIT_OUTPUTS))
            b = _session(export_onnx(rest, first(x)[0], root / f"b{m}.onnx", FINAL_OUTPUTS))
            t_full, t_split = [], []
            for r in range(runs + 10):
                t0 = time.perf_counter_ns()
                full.run(None, {"x": xa})
                t1 = time.perf_counter_ns()
                b.run(None, {"x": a.run(None, {"x": xa})[0]})
                t2 = time.perf_counter_ns()
                if r >= 10:  # warm-up
                    t_full.append(t1 - t0)
                    t_split.append(t2 - t1)
            full_ns = float(np.median(t_full))
            per_shape[shape] = max(0.0, (float(np.median(t_split)) - full_ns) / full_ns * full_flops)
    return tuple(0.0 if h is None else per_shape[shapes[i]] for i, h in enumerate(heads))
