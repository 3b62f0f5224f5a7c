"""The one cost rule of token exits: a dense part per stage plus a part per remaining unit.

FLOPs(input) = stem + Σ over stages s that any unit reaches of
(dense_flops[s] + units_reaching_s · per_unit_flops[s]). Used by the segmentation cost
model at calibration (`segmentation.pixel_exit.CostModel`) and by the report on measured
token exits (`report.metrics.masked_flops`); numpy only, so the report needs no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def unit_flops(reach: np.ndarray, stem_flops: float, dense_flops: Sequence[float],
               per_unit_flops: Sequence[float]) -> np.ndarray:
    """FLOPs per input (N,) from `reach` (N, stages): how many units ran each stage."""
    reach = np.asarray(reach, np.float64).reshape(len(reach), -1)
    total = np.full(len(reach), float(stem_flops))
    for s, (dense, per_unit) in enumerate(zip(dense_flops, per_unit_flops, strict=True)):
        total += np.where(reach[:, s] > 0, dense + reach[:, s] * per_unit, 0.0)
    return total


def reach_from_exits(exit_index: np.ndarray, stages: int) -> np.ndarray:
    """(N, stages) units that ran each stage, from each unit's exit (N, units)."""
    e = np.asarray(exit_index).reshape(len(exit_index), -1)
    return np.stack([(e >= s).sum(1) for s in range(stages)], axis=1)


def reach_from_counts(units_per_exit: np.ndarray) -> np.ndarray:
    """(N, stages) units that ran each stage, from units stopping at each exit (N, stages)."""
    tpe = np.asarray(units_per_exit, np.float64).reshape(len(units_per_exit), -1)
    return np.cumsum(tpe[:, ::-1], axis=1)[:, ::-1]
