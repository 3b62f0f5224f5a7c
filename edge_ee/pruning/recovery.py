"""Recovery losses for fine-tuning a pruned early-exit network, registered by name.

* `ce`: Σ_n w_n·CE(output n, y) — fine-tuning on the labels only.
* `distill`: knowledge distillation from the unpruned network (Hinton, Vinyals & Dean
  2015): the unpruned model (the teacher, eval mode, no gradients) sees the same batch,
  and every student output n is pulled towards a teacher output with
  α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y). An exit's teacher is its
  unpruned counterpart exit (`kd_exit_teacher='counterpart'`) or the unpruned final
  output (`'final'`); the final output's teacher is always the unpruned final output.

`accuracy_warnings` turns a `PruneReport` into the warnings a user needs: a drop beyond
`max_accuracy_drop`, and what to change (recovery loss, epochs, budget, ratio).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F

from edge_ee.errors import ConfigError
from edge_ee.exits.trained import EarlyExitModel
from edge_ee.pruning.config import PruneConfig

if TYPE_CHECKING:
    from edge_ee.pruning.schedules import PruneReport


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, temperature: float,
            alpha: float) -> torch.Tensor:
    """α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − α)·CE(student, y), batch mean."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    reduction="batchmean", log_target=True)
    loss = alpha * t * t * soft
    if alpha < 1.0:
        loss = loss + (1.0 - alpha) * F.cross_entropy(student, y)
    return loss


class RecoveryLoss:
    """`loss(outputs, x, y, weights, which)`: the fine-tuning loss of the student's outputs.

    `which[n]` is the position, among the teacher's outputs (exits…, final), of output n's
    unpruned counterpart; `weights[n]` its loss weight (0 skips it).
    """

    name: ClassVar[str] = ""

    def __init__(self, cfg: PruneConfig, teacher: EarlyExitModel | None) -> None:
        self.cfg, self.teacher = cfg, teacher

    def __call__(self, outputs: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 weights: Sequence[float], which: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError


class CrossEntropy(RecoveryLoss):
    name = "ce"

    def __call__(self, outputs: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 weights: Sequence[float], which: Sequence[int]) -> torch.Tensor:
        total = outputs[0].new_zeros(())
        for out, w in zip(outputs, weights, strict=True):
            if w:
                total = total + w * F.cross_entropy(out, y)
        return total


class Distill(RecoveryLoss):
    name = "distill"

    def __init__(self, cfg: PruneConfig, teacher: EarlyExitModel | None) -> None:
        if teacher is None:
            raise ConfigError("recovery 'distill' needs the unpruned network as teacher; "
                              "prune through prune_early_exit or choose recovery 'ce'")
        super().__init__(cfg, teacher.eval())

    def __call__(self, outputs: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 weights: Sequence[float], which: Sequence[int]) -> torch.Tensor:
        assert self.teacher is not None
        with torch.no_grad():
            targets = self.teacher(x)
        final = len(targets) - 1
        total = outputs[0].new_zeros(())
        for out, w, j in zip(outputs, weights, which, strict=True):
            if w:
                t = targets[final if self.cfg.kd_exit_teacher == "final" else j]
                total = total + w * kd_loss(out, t, y, self.cfg.kd_temperature, self.cfg.kd_alpha)
        return total


RECOVERIES: dict[str, type[RecoveryLoss]] = {CrossEntropy.name: CrossEntropy,
                                             Distill.name: Distill}


def accuracy_warnings(report: PruneReport, cfg: PruneConfig) -> list[str]:
    """Warnings for a drop of the final output's accuracy beyond `cfg.max_accuracy_drop`,
    each saying what to change; empty when the result is within what was allowed."""
    before, after = report.accuracy_before, report.accuracy_after
    if not before or not after:
        return []
    drop = before[-1] - after[-1]
    if drop <= cfg.max_accuracy_drop:
        return []
    what = []
    if cfg.recovery != "distill":
        what.append("distil from the unpruned network (recovery 'distill', --recovery distill)")
    if cfg.recover_epochs == 0:
        what.append("add recovery fine-tuning (recover_epochs, e.g. --recover-epochs 1)")
    elif report.stopped_at_budget:
        what.append(f"give it more time: recovery stopped at the {cfg.budget_min:g}-min "
                    f"{cfg.budget_clock} budget "
                    f"after {report.recover_steps} of {report.recover_steps_planned} steps "
                    "(--budget-min)")
    else:
        what.append(f"fine-tune longer (--recover-epochs, now {cfg.recover_epochs:g})")
    what.append(f"or prune less (--ratio, now {cfg.ratio:g})")
    return [f"pruned final accuracy {after[-1]:.4f} is {100 * drop:.1f} points below the "
            f"unpruned {before[-1]:.4f} (allowed {100 * cfg.max_accuracy_drop:.1f}); "
            + "; ".join(what)]
