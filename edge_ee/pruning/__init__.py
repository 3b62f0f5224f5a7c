"""Pruning early-exit networks (METHODS §2): methods × schedules, iterative with fine-tuning.

Methods (`PRUNING_METHODS`): `unstructured` global magnitude pruning and `structured`
channel pruning (torch-pruning). Schedules (`SCHEDULES`): `simultaneous` (backbone and
exits in one pool, fine-tuned together) and `sequential` (backbone first, then the exits
with the backbone frozen). `prune_early_exit(model, data, PruneConfig(...))` returns the
pruned copy and a `PruneReport`; `export_pruned` turns it into a bundle.
"""

from edge_ee.pruning.config import PRUNE_METHODS, PRUNE_SCHEDULES, PruneConfig, check_layers
from edge_ee.pruning.methods import PRUNING_METHODS, PruningMethod
from edge_ee.pruning.report import compressed_size, export_pruned, sparsity_figure
from edge_ee.pruning.schedules import SCHEDULES, PruneReport, Schedule, prune_early_exit

__all__ = [
    "PRUNE_METHODS",
    "PRUNE_SCHEDULES",
    "PRUNING_METHODS",
    "SCHEDULES",
    "PruneConfig",
    "PruneReport",
    "PruningMethod",
    "Schedule",
    "check_layers",
    "compressed_size",
    "export_pruned",
    "prune_early_exit",
    "sparsity_figure",
]
