"""Threshold search on hand-checkable tables."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge_ee.calibrate import ExitTable, greedy_path, pick_budget, pick_max_drop, random_hull
from edge_ee.cost import CostTable
from edge_ee.errors import CalibrationError

COSTS = CostTable(stage_flops=(10, 10, 10), classifier_flops=70, head_flops=(1, 1, 1))


def _table(seed: int = 0, n: int = 400) -> ExitTable:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    conf = rng.uniform(0, 1, (4, n)).astype(np.float32)
    # exits are right when confident, more often the later they are
    correct = np.vstack([conf[i] > 0.5 - 0.1 * i for i in range(3)] + [rng.uniform(size=n) < 0.9])
    pred = np.where(correct, labels, (labels + 1) % 4)
    conf[3] = np.inf
    return ExitTable(pred, conf, labels, COSTS, np.ones(4, bool))


def test_evaluate_by_hand() -> None:
    labels = np.array([0, 1])
    pred = np.array([[0, 0], [1, 1], [0, 1]])
    conf = np.array([[0.9, 0.2], [0.5, 0.8], [np.inf, np.inf]], np.float32)
    costs = CostTable((10, 10), 80, (2, 3))
    t = ExitTable(pred, conf, labels, costs, np.ones(3, bool))
    p = t.evaluate(np.array([0.6, 0.6]))
    # sample 0 leaves at exit 0 (10 + 2), sample 1 at exit 1 (20 + 2 + 3)
    assert p.cost_fraction == pytest.approx((12 + 25) / 2 / 100)
    assert p.accuracy == 1.0 and p.exit_fractions == (0.5, 0.5, 0.0)
    # a disabled exit (inf) is neither run nor paid: sample 0 now runs to the end
    q = t.evaluate(np.array([np.inf, 0.6]))
    assert q.cost_fraction == pytest.approx((100 + 3 + 20 + 3) / 2 / 100)


def test_greedy_path_walks_down_in_cost_and_budgets_hold() -> None:
    t = _table()
    path = greedy_path(t)
    costs = [p.cost_fraction for p in path]
    assert costs[0] == 1.0 and all(b < a for a, b in itertools.pairwise(costs))
    p = pick_max_drop(path, 0.01)
    assert p.accuracy >= path[0].accuracy - 0.01 and p.cost_fraction < 1.0
    b = pick_budget(path, 0.5)
    assert b is not None and b.cost_fraction <= 0.5
    assert pick_budget(path, 0.0001) is None
    with pytest.raises(CalibrationError):
        pick_max_drop(path, -0.1)


def test_random_hull_is_pareto_and_concave() -> None:
    hull = random_hull(_table(), vectors=200)
    c = np.array([p.cost_fraction for p in hull])
    a = np.array([p.accuracy for p in hull])
    assert (np.diff(c) > 0).all() and (np.diff(a) > 0).all()
    slopes = np.diff(a) / np.diff(c)
    assert (np.diff(slopes) <= 1e-9).all()
