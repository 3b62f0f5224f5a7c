"""ExitNet: a backbone cut into ordered stages with an exit point after each stage.

An `ExitNet` is `stages[0] → stages[1] → … → stages[S-1] → classifier`. The feature
after stage n is where exit n may answer; the classifier is the network's own final
exit. Adapters build one from

* a CIFAR ResNet (`from_resnet_cifar`: stem + every residual block is a cut point),
* an `nn.Sequential` (`from_sequential`: cut after the given child indices/names),
* any `nn.Module` (`from_module`: cut at the named submodules, via torch.fx).

`granularity` says what one exit decides for: a whole sample (`sample`), each pixel
(`pixel`, segmentation) or each token (`token`, language models). The stage/exit
contract is the same; only the exit heads differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx, nn

from edge_ee.errors import ModelError
from edge_ee.models.resnet_cifar import CifarResNet, PoolLinear, Stem


class ExitNet(nn.Module):
    """Ordered stages (exit point after each) plus the network's own final classifier."""

    def __init__(
        self,
        stages: Sequence[nn.Module],
        classifier: nn.Module,
        exit_names: Sequence[str],
        input_shape: Sequence[int],
        name: str = "model",
        granularity: str = "sample",
    ) -> None:
        super().__init__()
        if len(stages) != len(exit_names):
            raise ModelError(f"{len(stages)} stages but {len(exit_names)} exit names")
        if not stages:
            raise ModelError("an ExitNet needs at least one stage")
        if granularity not in ("sample", "pixel", "token"):
            raise ModelError(f"granularity must be sample, pixel or token, got {granularity!r}")
        self.stages = nn.ModuleList(stages)
        self.classifier = classifier
        self.exit_names = list(exit_names)
        self.input_shape = tuple(int(s) for s in input_shape)  # without the batch axis
        self.name = name
        self.granularity = granularity

    @property
    def num_exits(self) -> int:
        """Number of intermediate exit points (the final classifier not counted)."""
        return len(self.stages)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature after every stage, in order."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.classifier(x)

    @torch.no_grad()
    def feature_shapes(self) -> list[tuple[int, ...]]:
        """Shape (without batch) of the feature after every stage, from a dummy input."""
        was = self.training
        self.eval()
        x = torch.zeros((1, *self.input_shape))
        shapes = [tuple(f.shape[1:]) for f in self.features(x)]
        self.train(was)
        return shapes


def from_resnet_cifar(model: CifarResNet, name: str | None = None) -> ExitNet:
    """Every residual block is a stage; the stem joins the first block."""
    stem = Stem()
    stem.conv1, stem.bn1 = model.conv1, model.bn1
    blocks, names = [], []
    for lname in ("layer1", "layer2", "layer3"):
        for i, block in enumerate(getattr(model, lname)):
            blocks.append(block)
            names.append(f"{lname}.{i}")
    blocks[0] = nn.Sequential(stem, blocks[0])
    head = PoolLinear(model.linear.in_features, model.linear.out_features)
    head.linear = model.linear
    return ExitNet(blocks, head, names, (3, 32, 32), name or f"resnet{model.depth}")


def from_sequential(
    seq: nn.Sequential,
    cut_after: Sequence[int | str],
    input_shape: Sequence[int],
    name: str = "sequential",
) -> ExitNet:
    """Cut an `nn.Sequential` after the given children (index or child name)."""
    names = [n for n, _ in seq.named_children()]
    idx = []
    for c in cut_after:
        if isinstance(c, int):
            if not 0 <= c < len(names) - 1:
                raise ModelError(f"cut index {c} out of range 0..{len(names) - 2} "
                                 "(the last child must stay in the final classifier)")
            idx.append(c)
        elif c in names[:-1]:
            idx.append(names.index(c))
        else:
            raise ModelError(f"cut point {c!r} is not a child of the Sequential; "
                             f"choose from {names[:-1]}")
    if sorted(set(idx)) != idx:
        raise ModelError(f"cut points must be distinct and in order, got {list(cut_after)}")
    children = list(seq.children())
    stages, start = [], 0
    for i in idx:
        stages.append(nn.Sequential(*children[start : i + 1]))
        start = i + 1
    return ExitNet(stages, nn.Sequential(*children[start:]), [names[i] for i in idx],
                   input_shape, name)


def from_module(
    model: nn.Module, cut_points: Sequence[str], input_shape: Sequence[int], name: str = "model"
) -> ExitNet:
    """Cut any traceable `nn.Module` at the outputs of the named submodules (torch.fx).

    Each cut must be a single-tensor boundary: nothing but the cut module's output may be
    used after it by nodes before it (e.g. a skip connection across the cut is refused).
    """
    modules = dict(model.named_modules())
    for c in cut_points:
        if c not in modules or c == "":
            raise ModelError(f"cut point {c!r} is not a submodule of {type(model).__name__}; "
                             f"choose from e.g. {[n for n in modules if n][:8]}")
    class _CutTracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname in cut_points or super().is_leaf_module(m, qualname)

    try:
        gm = fx.GraphModule(model, _CutTracer().trace(model))
    except Exception as err:  # fx raises many kinds on untraceable code
        raise ModelError(f"cannot trace {type(model).__name__} with torch.fx ({err}); "
                         "use from_sequential or build the stages by hand") from err
    nodes = list(gm.graph.nodes)
    pos = {}
    for i, n in enumerate(nodes):
        if n.op == "call_module" and n.target in cut_points:
            pos[n.target] = i
    for c in cut_points:
        if c not in pos:
            raise ModelError(f"cut point {c!r} is never called in forward(); pick a called module")
    order = [pos[c] for c in cut_points]
    if order != sorted(order):
        raise ModelError(f"cut points must follow forward() order; got {list(cut_points)}")
    bounds = [*order, len(nodes)]
    for c, b in zip(cut_points, order, strict=True):
        crossing = {a.name for n in nodes[b + 1 :] for a in n.all_input_nodes
                    if nodes.index(a) <= b and a.op != "get_attr"} - {nodes[b].name}
        if crossing:
            raise ModelError(f"cut at {c!r} is not a single-tensor boundary: {sorted(crossing)} "
                             "are also used after it; cut at a later module")
    stages, start = [], 0
    for b in bounds:
        stages.append(_subgraph(gm, nodes, start, b))
        start = b + 1
    classifier = stages.pop()
    return ExitNet(stages, classifier, list(cut_points), input_shape, name)


def _subgraph(gm: fx.GraphModule, nodes: list[fx.Node], start: int, end: int) -> fx.GraphModule:
    """Nodes start..end (inclusive; `end == len` means up to the output) as a 1-in 1-out module."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    inp = g.placeholder("x")
    if start > 0:
        env[nodes[start - 1]] = inp
    last = inp

    def arg(a: fx.Node) -> fx.Node:
        if a not in env and a.op == "get_attr":  # parameters/buffers used across a cut
            env[a] = g.node_copy(a)
        return env[a]

    for n in nodes[start : end + 1] if end < len(nodes) else nodes[start:]:
        if n.op == "placeholder":
            env[n] = inp
            continue
        if n.op == "output":
            g.output(fx.map_arg(n.args[0], arg))
            return fx.GraphModule(gm, g)
        last = env[n] = g.node_copy(n, arg)
    g.output(last)
    return fx.GraphModule(gm, g)
