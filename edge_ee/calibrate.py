"""Per-exit thresholds: the paper's random search + convex hull, and a budgeted greedy path.

An `ExitTable` holds, for one split, every exit's prediction and confidence per sample
(from `exits.fit.decisions`) and the cost table; a threshold vector assigns each sample
the first exit whose confidence exceeds its threshold (the final classifier always
answers). Thresholds of +inf disable an exit (its head is then neither run nor paid).

* `random_hull`: METHODS §1 as published: random threshold vectors, uniform in [0, 1]
  or, better for flat confidences, in each exit's observed confidence range; keep the
  upper convex hull of (cost, accuracy).
* `greedy_path`: from the full network, repeatedly lower one exit's threshold to one of
  its observed confidence quantiles, taking the move that saves the most FLOPs per
  accuracy point lost. Every point of the path is an operating point; `pick_max_drop`
  (cheapest with accuracy drop ≤ Δ) and `pick_budget` (most accurate within a FLOPs
  budget) choose from it.
* `refine_path`: between two consecutive path points that differ in one exit, insert
  points at that exit's observed confidences in between, so a walk along the path
  (fixed-sequence testing for certified thresholds) can stop closer to its limit.

**Worst-case overhead bound** (`max_overhead`, a fraction of the full network's cost):
an input that takes no exit pays the full network plus every enabled exit's charged cost
(its head and, when measured, its boundary: `CostTable.heads_array`). Both searches admit
only exit sets whose summed charge stays within the bound — greedy never enables an exit
that would break it, random vectors are repaired by switching exits off — so every point
of the path keeps the exits-off latency ≤ (1 + bound) × the full network's when the
charges are right. `OperatingPoint.overhead_fraction` is that sum.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from converters.progress import progress as tqdm
from edge_ee.cost import CostTable, expected_cost
from edge_ee.errors import CalibrationError


@dataclass(frozen=True)
class OperatingPoint:
    thresholds: tuple[float, ...]
    cost_fraction: float  # expected FLOPs / full network FLOPs
    accuracy: float
    exit_fractions: tuple[float, ...]  # share of samples leaving at each exit (+ final)
    # worst case: every enabled exit's cost (head + boundary) / full network, priced with the
    # table's costs (a pure-FLOPs table: heads only; the charged total: calibration's
    # `overhead_bound.charged`)
    overhead_fraction: float = 0.0

    def to_json(self) -> dict:
        return {"thresholds": [None if not np.isfinite(t) else float(t) for t in self.thresholds],
                "cost_fraction": self.cost_fraction, "accuracy": self.accuracy,
                "exit_fractions": list(self.exit_fractions),
                "overhead_fraction": self.overhead_fraction}


class ExitTable:
    """Predictions/confidences of every exit on one split, with costs."""

    def __init__(self, pred: np.ndarray, conf: np.ndarray, labels: np.ndarray,
                 costs: CostTable, has_head: np.ndarray) -> None:
        self.pred, self.conf = pred, conf
        self.labels = np.asarray(labels)
        self.correct = pred == self.labels[None, :]
        self.costs = costs
        self.has_head = np.asarray(has_head, bool)
        self.num_exits = pred.shape[0] - 1
        self.n = pred.shape[1]
        if self.n == 0:
            raise CalibrationError("no samples to calibrate on")

    def with_costs(self, costs: CostTable) -> ExitTable:
        """The same decisions priced with other costs (e.g. with per-exit call overhead)."""
        return ExitTable(self.pred, self.conf, self.labels, costs, self.has_head)

    @property
    def full_accuracy(self) -> float:
        return float(self.correct[-1].mean())

    def enabled(self, thresholds: np.ndarray) -> np.ndarray:
        return np.append(np.isfinite(thresholds) & self.has_head[:-1], True)

    def assign(self, thresholds: np.ndarray) -> np.ndarray:
        fires = self.conf[:-1] > np.asarray(thresholds, np.float32)[:, None]
        fires = np.vstack([fires, np.ones((1, self.n), bool)])
        return fires.argmax(0)

    def exit_charges(self) -> np.ndarray:
        """Per exit (no final): its charged cost (head + boundary) / full network, 0 without
        a head."""
        return np.where(self.has_head[:-1], self.costs.heads_array()[:-1], 0.0) / \
            self.costs.full_flops

    def overhead_fraction(self, thresholds: np.ndarray) -> float:
        """The worst case's extra cost (no exit taken): every enabled exit's charge / full."""
        return float(self.exit_charges() @ self.enabled(np.asarray(thresholds, np.float64))[:-1])

    def evaluate(self, thresholds: np.ndarray) -> OperatingPoint:
        thr = np.asarray(thresholds, np.float64)
        exits = self.assign(thr)
        cost = expected_cost(self.costs, exits, self.enabled(thr)).mean()
        acc = self.correct[exits, np.arange(self.n)].mean()
        hist = np.bincount(exits, minlength=self.num_exits + 1) / self.n
        return OperatingPoint(tuple(float(t) for t in thr), float(cost / self.costs.full_flops),
                              float(acc), tuple(float(h) for h in hist),
                              self.overhead_fraction(thr))


def cheapest_exit(table: ExitTable) -> tuple[int, float] | None:
    """(index, charge) of the exit with a head charged least on its own; None without exits."""
    idx = np.flatnonzero(table.has_head[:-1])
    if idx.size == 0:
        return None
    charges = table.exit_charges()[idx]
    return int(idx[charges.argmin()]), float(charges.min())


def no_exit_fits(table: ExitTable, max_overhead: float | None) -> str | None:
    """Why `max_overhead` admits no exit at all (every exit with a head is charged more than
    the bound on its own, so the search can only return the full network); None if some fits."""
    cheap = cheapest_exit(table)
    if max_overhead is None or cheap is None or cheap[1] <= max_overhead + 1e-12:
        return None
    i, charge = cheap
    return (f"--max-overhead {max_overhead:g} admits no exit: the cheapest exit (exit {i}) is "
            f"charged {charge:.4f} of the full network on its own (head + boundary); raise "
            f"--max-overhead to at least {charge:.4f}, or build without exits (--monolithic)")


def _candidates(conf: np.ndarray, count: int) -> np.ndarray:
    """Thresholds at observed confidence quantiles, dense near the top."""
    finite = conf[np.isfinite(conf)]
    if finite.size == 0:
        return np.empty(0)
    q = np.unique(np.concatenate([np.linspace(0, 1, count // 2),
                                  1 - np.geomspace(1e-3, 1, count // 2)]))
    return np.unique(np.quantile(finite, np.clip(q, 0, 1)))[::-1]


def greedy_path(table: ExitTable, candidates: int = 48, max_steps: int = 5000,
                progress: bool = False, max_overhead: float | None = None
                ) -> list[OperatingPoint]:
    """Operating points from the full network down, one threshold move at a time.

    `max_overhead`: a move may not enable an exit whose charge would lift the enabled
    exits' summed charge above this fraction of the full network (see the module docstring)."""
    e_n, n = table.num_exits, table.n
    charges = table.exit_charges()
    limit = np.inf if max_overhead is None else max_overhead + 1e-12
    thr = np.full(e_n, np.inf)
    exits = np.full(n, e_n)
    cum_bb, heads = table.costs.cum_backbone(), table.costs.heads_array()
    cols = np.arange(n)
    cands = [(_candidates(table.conf[i], candidates) if table.has_head[i] else np.empty(0))
             for i in range(e_n)]
    path = [table.evaluate(thr)]
    cur_cost = path[0].cost_fraction * table.costs.full_flops
    cur_acc = path[0].accuracy
    bar = tqdm(total=None, desc="threshold search", disable=not progress, leave=False)
    for _ in range(max_steps):
        best = None
        spent = float(charges @ table.enabled(thr)[:-1])
        for i in range(e_n):
            t = cands[i][cands[i] < thr[i]]
            if t.size == 0:
                continue
            if not np.isfinite(thr[i]) and spent + charges[i] > limit:
                continue  # enabling exit i would break the worst-case bound
            mask = (exits > i)[None, :] & (table.conf[i][None, :] > t[:, None])
            new_e = np.where(mask, i, exits[None, :])
            en = table.enabled(thr)
            en[i] = True
            head_cum = np.cumsum(heads * en)
            cost = (cum_bb[new_e] + head_cum[new_e]).mean(1)
            acc = table.correct[new_e, cols[None, :]].mean(1)
            saved, lost = cur_cost - cost, cur_acc - acc
            score = np.where(saved > 1e-9 * cum_bb[-1], saved / np.maximum(lost, 1e-7), -np.inf)
            j = int(score.argmax())
            if np.isfinite(score[j]) and (best is None or score[j] > best[0]):
                best = (score[j], i, t[j], new_e[j], cost[j], acc[j])
        if best is None:
            break
        _, i, t, exits, cur_cost, cur_acc = best
        thr = thr.copy()
        thr[i] = t
        path.append(table.evaluate(thr))
        bar.update()
    bar.close()
    return path


def refine_path(table: ExitTable, path: list[OperatingPoint], between: int = 8
                ) -> list[OperatingPoint]:
    """`path` with up to `between` points inserted between consecutive points that differ in
    one exit's threshold: that exit's threshold at quantiles of `table`'s confidences lying
    strictly between the two. The order (most conservative first) is kept."""
    if between < 1 or len(path) < 2:
        return list(path)
    out = [path[0]]
    for a, b in itertools.pairwise(path):
        ta, tb = np.asarray(a.thresholds), np.asarray(b.thresholds)
        diff = np.flatnonzero(ta != tb)
        if diff.size == 1:
            i = int(diff[0])
            c = table.conf[i]
            c = c[np.isfinite(c) & (c > tb[i]) & (c < ta[i])]
            if c.size:
                qs = np.quantile(c, np.linspace(0, 1, between + 2)[1:-1])
                for v in np.unique(qs)[::-1]:
                    thr = ta.copy()
                    thr[i] = v
                    out.append(table.evaluate(thr))
        out.append(b)
    return out


def random_hull(table: ExitTable, vectors: int = 100, seed: int = 0,
                observed_range: bool = True, max_overhead: float | None = None
                ) -> list[OperatingPoint]:
    """The paper's search: random threshold vectors, then the upper convex hull.

    `max_overhead`: a vector whose enabled exits are charged more than the bound is
    repaired before it is evaluated: its exits are switched off, in a random order, until
    the rest fits (`admissible`)."""
    rng = np.random.default_rng(seed)
    lo = np.zeros(table.num_exits)
    hi = np.ones(table.num_exits)
    if observed_range:
        for i in range(table.num_exits):
            c = table.conf[i][np.isfinite(table.conf[i])]
            if c.size:
                lo[i], hi[i] = c.min(), c.max()
    points = [table.evaluate(np.full(table.num_exits, np.inf))]
    for _ in range(vectors):
        thr = np.where(table.has_head[:-1], rng.uniform(lo, hi), np.inf)
        if max_overhead is not None:
            thr = admissible(table, thr, max_overhead, rng)
        points.append(table.evaluate(thr))
    return upper_hull(points)


def admissible(table: ExitTable, thresholds: np.ndarray, max_overhead: float,
               rng: np.random.Generator) -> np.ndarray:
    """`thresholds` with enabled exits switched off (+inf), in a random order, until their
    summed charge is within `max_overhead`."""
    thr = np.array(thresholds, np.float64)
    charges = table.exit_charges()
    on = np.flatnonzero(table.enabled(thr)[:-1])
    for i in rng.permutation(on):
        if charges @ table.enabled(thr)[:-1] <= max_overhead + 1e-12:
            break
        thr[i] = np.inf
    return thr


def upper_hull(points: list[OperatingPoint]) -> list[OperatingPoint]:
    """Pareto-optimal points (cheaper or more accurate) on the upper convex hull, by cost."""
    pts = sorted(points, key=lambda p: (p.cost_fraction, -p.accuracy))
    hull: list[OperatingPoint] = []
    for p in pts:
        if hull and p.accuracy <= hull[-1].accuracy:
            continue
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = ((b.cost_fraction - a.cost_fraction) * (p.accuracy - a.accuracy)
                     - (b.accuracy - a.accuracy) * (p.cost_fraction - a.cost_fraction))
            if cross >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def pick_max_drop(path: list[OperatingPoint], max_drop: float) -> OperatingPoint:
    """Cheapest point within `max_drop` (absolute, e.g. 0.01) of the full network's accuracy.

    The reference is the most expensive point (the full network: a greedy path's first
    point, a hull's last).
    """
    if max_drop < 0:
        raise CalibrationError(f"accuracy drop must be ≥ 0, got {max_drop}")
    ref = max(path, key=lambda p: p.cost_fraction).accuracy
    ok = [p for p in path if p.accuracy >= ref - max_drop - 1e-12]
    return min(ok, key=lambda p: (p.cost_fraction, -p.accuracy))


def pick_budget(path: list[OperatingPoint], cost_fraction: float) -> OperatingPoint | None:
    """Most accurate point costing at most `cost_fraction` of the full network, if any."""
    ok = [p for p in path if p.cost_fraction <= cost_fraction + 1e-12]
    return max(ok, key=lambda p: (p.accuracy, -p.cost_fraction)) if ok else None
