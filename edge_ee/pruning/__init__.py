"""Pruning early-exit networks (METHODS §2): methods × schedules, iterative with fine-tuning.

Methods (`PRUNING_METHODS`): `unstructured` global magnitude pruning and `structured`
channel pruning (torch-pruning). Schedules (`SCHEDULES`): `simultaneous` (backbone and
exits in one pool, fine-tuned together) and `sequential` (backbone first, then the exits
with the backbone frozen). Recovery losses (`RECOVERIES`): `ce` and `distill` (knowledge
distillation from the unpruned network), for every fine-tuning step and the
`recover_epochs` after the last round, stopped at a wall or CPU-time budget.
`prune_early_exit(model, data, PruneConfig(...), evaluate=test)` returns the pruned copy
and a `PruneReport` (accuracy before / after pruning / after recovery, warnings when it
dropped more than allowed); `export_pruned` turns it into a bundle.
"""

from edge_ee.pruning.config import PRUNE_METHODS, PRUNE_SCHEDULES, PruneConfig, check_layers
from edge_ee.pruning.methods import PRUNING_METHODS, PruningMethod
from edge_ee.pruning.recovery import RECOVERIES, RecoveryLoss, kd_loss
from edge_ee.pruning.report import compressed_size, export_pruned, sparsity_figure
from edge_ee.pruning.schedules import SCHEDULES, PruneReport, Schedule, prune_early_exit

__all__ = [
    "PRUNE_METHODS",
    "PRUNE_SCHEDULES",
    "PRUNING_METHODS",
    "RECOVERIES",
    "SCHEDULES",
    "PruneConfig",
    "PruneReport",
    "PruningMethod",
    "RecoveryLoss",
    "Schedule",
    "check_layers",
    "compressed_size",
    "export_pruned",
    "kd_loss",
    "prune_early_exit",
    "sparsity_figure",
]
