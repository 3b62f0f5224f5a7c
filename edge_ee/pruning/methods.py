"""Pruning methods, registered by name: one pruning round at a time over a pool of layers.

* `unstructured`: global magnitude pruning (`torch.nn.utils.prune.global_unstructured`
  with L1 magnitude) over the pool's weights; masks live as forward pre-hooks during
  fine-tuning and `finalize` makes them permanent (plain zeros in `weight`).
* `structured`: channel pruning with torch-pruning's `MetaPruner`,
  `GroupMagnitudeImportance` and `global_pruning=True` on the `EarlyExitModel`, whose
  forward returns every exit's logits, so exit heads lose the input columns of pruned
  channels. Layers outside the pool (and every linear layer whose outputs are classes)
  are ignored as roots. Layers in `score_exclude` do not count in a group's importance
  (the sequential schedule's phase 1 ranks channels by the backbone alone).

  CIFAR ResNets with option-A shortcuts (channel zero-padding, which torch-pruning cannot
  map) keep the residual-stream width: the stem conv and every block's `conv2` are not
  pruned, the block-internal channels (conv1 → bn1 → conv2 input) are. The exits sit on
  the residual stream, so there they keep their inputs.

Both refuse a round that would remove every weight/channel of a layer, naming the layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import prune

from edge_ee.errors import ConfigError, ModelError


class PruningMethod:
    """Interface: `step()` prunes one round of the pool, `finalize()` makes it permanent."""

    name: ClassVar[str] = ""

    def __init__(self, model: nn.Module, pool: dict[str, nn.Module], ratio: float, rounds: int,
                 example: torch.Tensor, score_exclude: Sequence[nn.Module] = ()) -> None:
        if not pool:
            raise ConfigError("nothing to prune: every prunable layer is ignored")
        self.model, self.pool, self.ratio, self.rounds = model, pool, ratio, rounds
        self.example, self.score_exclude = example, list(score_exclude)

    def step(self) -> None:
        raise NotImplementedError

    def finalize(self) -> None:
        """Make the pruning permanent (no hooks, no masks left)."""


class UnstructuredMagnitude(PruningMethod):
    name = "unstructured"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.per_round = 1.0 - (1.0 - self.ratio) ** (1.0 / self.rounds)

    def step(self) -> None:
        params = [(m, "weight") for m in self.pool.values()]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured,
                                  amount=self.per_round)
        for name, m in self.pool.items():
            if int(m.weight_mask.count_nonzero()) == 0:
                raise ConfigError(
                    f"pruning would remove every weight of layer {name!r}; lower the ratio "
                    f"(now {self.ratio}) or add {name!r} to ignore_layers")

    def finalize(self) -> None:
        for m in self.pool.values():
            if prune.is_pruned(m):
                prune.remove(m, "weight")


def _class_linears(model: nn.Module) -> list[nn.Module]:
    """Linear layers whose output is class logits (exit heads, final classifier)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _option_a_residual_convs(model: nn.Module) -> list[nn.Module]:
    """For CIFAR ResNets with zero-padding shortcuts: the convs that write the residual stream."""
    from edge_ee.models.resnet_cifar import BasicBlock, ShortcutA, Stem

    if not any(isinstance(m, ShortcutA) for m in model.modules()):
        return []
    convs: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, BasicBlock):
            convs.append(m.conv2)
        elif isinstance(m, Stem):
            convs.append(m.conv1)
    return convs


class StructuredChannels(PruningMethod):
    name = "structured"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        import torch_pruning as tp

        in_pool = {id(m) for m in self.pool.values()}
        ignored = [m for m in self.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                   and id(m) not in in_pool]
        ignored += _class_linears(self.model) + _option_a_residual_convs(self.model)
        self.names = {id(m): n for n, m in self.model.named_modules()}
        imp = _FilteredImportance(self.score_exclude)
        was = self.model.training
        self.model.eval()
        try:
            self.pruner = tp.pruner.MetaPruner(
                self.model, self.example, importance=imp, global_pruning=True,
                pruning_ratio=self.ratio, iterative_steps=self.rounds,
                ignored_layers=list({id(m): m for m in ignored}.values()))
        except Exception as err:  # torch-pruning raises plain exceptions when tracing fails
            raise ModelError(f"torch-pruning cannot trace this model ({err}); prune it "
                             "unstructured or list the untraceable layers in ignore_layers") from err
        finally:
            self.model.train(was)

    def step(self) -> None:
        dg = self.pruner.DG
        original = dg.check_pruning_group

        def refuse_emptying(group: Any) -> bool:  # a torch-pruning Group
            # torch-pruning silently skips a group that would lose every channel of a layer;
            # we refuse instead and name the layer.
            if original(group):
                return True
            for dep, idxs in group:
                layer = dep.target.module
                out = dg.is_out_channel_pruning_fn(dep.handler)
                chs = dg.get_out_channels(layer) if out else dg.get_in_channels(layer)
                if chs is not None and chs <= len(idxs):
                    name = self.names.get(id(layer), type(layer).__name__)
                    raise ConfigError(
                        f"pruning would remove every channel of layer {name!r} "
                        f"({'output' if out else 'input'} channels); lower the ratio "
                        f"(now {self.ratio}) or add {name!r} to ignore_layers")
            return False

        was = self.model.training
        self.model.eval()
        dg.check_pruning_group = refuse_emptying
        try:
            for group in self.pruner.step(interactive=True):
                group.prune()
        finally:
            dg.check_pruning_group = original
            self.model.train(was)


class _FilteredImportance:
    """Group L2 magnitude importance that leaves the given layers out of the sum."""

    def __init__(self, exclude: Sequence[nn.Module]) -> None:
        import torch_pruning as tp

        self.inner = tp.importance.GroupMagnitudeImportance(p=2)
        self.exclude = {id(m) for m in exclude}

    def __call__(self, group: Any) -> torch.Tensor:  # a torch-pruning Group
        if not self.exclude:
            return self.inner(group)
        saved = group._group
        group._group = [g for g in saved if id(g.dep.layer) not in self.exclude]
        try:
            return self.inner(group)
        finally:
            group._group = saved


PRUNING_METHODS: dict[str, type[PruningMethod]] = {
    UnstructuredMagnitude.name: UnstructuredMagnitude,
    StructuredChannels.name: StructuredChannels,
}
