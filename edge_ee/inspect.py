"""Where a model can be cut: single-tensor boundaries with the FLOPs fraction before each.

`cut_points` tries every named submodule up to `max_depth` as a cut (the same torch.fx
check `exitnet.from_module` applies: nothing but that module's output may be used after
it) and reports, for each valid one, the share of the network's FLOPs spent up to and
including it and the feature shape there. `auto_cuts` picks `count` of them evenly
spaced by FLOPs (`--cut auto`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edge_ee.cost import count_flops
from edge_ee.errors import ModelError
from edge_ee.exitnet import from_module

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CutPoint:
    name: str
    flops_fraction: float  # FLOPs up to and including this module / the whole network
    shape: tuple[int, ...]  # feature shape there, without the batch axis


def cut_points(model: nn.Module, input_shape: Sequence[int], max_depth: int = 3) -> list[CutPoint]:
    """Valid cut points in forward order (the last child, the classifier, excluded)."""
    model = model.eval()
    x = torch.zeros((1, *input_shape))
    try:
        total = count_flops(model, x)
    except Exception as err:  # a model that does not run on this input shape
        raise ModelError(f"the model does not run on an input of shape {tuple(x.shape)} ({err}); "
                         "pass the right --input-shape") from err
    points: list[tuple[int, CutPoint]] = []
    for name, _ in model.named_modules():
        if not name or name.count(".") >= max_depth:
            continue
        try:
            net = from_module(model, [name], input_shape, "probe")
        except ModelError:
            continue
        with torch.no_grad():
            feat = net.stages[0](x)
            if not isinstance(feat, torch.Tensor) or not feat.shape[0] == 1:
                continue
            flops = count_flops(net.stages[0], x)
        points.append((name.count("."), CutPoint(name, flops / max(total, 1),
                                                 tuple(feat.shape[1:]))))
    # cumulative FLOPs rise along forward(); on a tie the outermost module comes first
    points.sort(key=lambda p: (p[1].flops_fraction, p[0]))
    out = [p for _, p in points if p.flops_fraction < 1.0 - 1e-9]
    log.info("%d valid cut points of %d modules", len(out), sum(1 for _ in model.named_modules()))
    return out


def auto_cuts(points: Sequence[CutPoint], count: int) -> list[str]:
    """`count` cut points evenly spaced by FLOPs fraction, outermost module on ties; never
    two nested modules (a container and its child cannot both be cuts)."""
    if count < 1:
        raise ModelError(f"--cut auto needs at least 1 exit, got {count}")
    if not points:
        raise ModelError("the model has no single-tensor cut point; build the stages by hand")
    fr = np.array([p.flops_fraction for p in points])
    chosen: list[str] = []
    for target in np.linspace(0, 1, count + 2)[1:-1]:
        for i in np.argsort(np.abs(fr - target), kind="stable"):
            name = points[int(i)].name
            nested = any(name == c or name.startswith(c + ".") or c.startswith(name + ".")
                         for c in chosen)
            if not nested:
                chosen.append(name)
                break
    order = {p.name: i for i, p in enumerate(points)}
    return sorted(chosen, key=order.__getitem__)
