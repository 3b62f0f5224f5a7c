"""Certified thresholds (METHODS §6): a guaranteed accuracy drop, Learn-then-Test style.

Per-sample loss at thresholds λ: L_i(λ) = 1[full network correct on i ∧ early-exit
prediction wrong on i]. Its mean bounds the accuracy drop from above. For each point of
a cost-ordered threshold path (most conservative first) a valid p-value for
H₀: E[L(λ)] > ε is computed from the n calibration losses, with one of two bounds
registered by name:

* `binomial`: the exact binomial tail P(Binom(n, ε) ≤ n·R̂) (L is binary, so this is
  the tightest valid p-value);
* `hoeffding_bentkus`: min of the Hoeffding (KL form) and Bentkus bounds, as in Learn
  then Test (Angelopoulos et al., 2021): min(exp(−n·h(R̂ ∧ ε, ε)), e·P(Binom(n, ε) ≤
  ⌈n·R̂⌉)); valid for any loss in [0, 1], never tighter than the binomial tail here.

Fixed-sequence testing walks the path, certifies while p ≤ δ and stops at the first
failure; the cheapest certified point is exported, so P(E[L] ≤ ε) ≥ 1 − δ for it (the
family-wise error is controlled because the order is fixed before the calibration
losses are looked at: the path comes from data independent of the calibration set).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import binom

from edge_ee.calibrate import ExitTable, OperatingPoint
from edge_ee.errors import ConfigError


class RiskBound:
    """A valid p-value for H₀: E[L] > ε from the empirical risk of n losses in [0, 1]."""

    name = ""

    def p_value(self, risk: float, n: int, epsilon: float) -> float:
        raise NotImplementedError

    def upper_bound(self, risk: float, n: int, delta: float) -> float:
        """The (1 − δ) upper confidence bound on E[L]: the smallest ε with p ≤ δ."""
        if self.p_value(risk, n, 1.0 - 1e-12) > delta:
            return 1.0
        lo = min(max(risk, 0.0), 1.0 - 1e-12)
        if self.p_value(risk, n, lo) <= delta:
            return lo
        return float(brentq(lambda e: self.p_value(risk, n, e) - delta, lo, 1.0 - 1e-12,
                            xtol=1e-10))


class BinomialBound(RiskBound):
    """Exact binomial tail: valid for binary losses (Clopper–Pearson in p-value form)."""

    name = "binomial"

    def p_value(self, risk: float, n: int, epsilon: float) -> float:
        k = math.floor(risk * n + 1e-9)
        return float(binom.cdf(k, n, epsilon))


class HoeffdingBentkusBound(RiskBound):
    """Learn then Test's Hoeffding–Bentkus p-value (any loss bounded in [0, 1])."""

    name = "hoeffding_bentkus"

    def p_value(self, risk: float, n: int, epsilon: float) -> float:
        a = min(risk, epsilon)
        hoeffding = math.exp(-n * _kl_bernoulli(a, epsilon))
        bentkus = math.e * float(binom.cdf(math.ceil(risk * n - 1e-9), n, epsilon))
        return min(hoeffding, bentkus, 1.0)


def _kl_bernoulli(a: float, b: float) -> float:
    """KL(Bern(a) ‖ Bern(b)) = a·ln(a/b) + (1−a)·ln((1−a)/(1−b)), with 0·ln 0 = 0."""
    out = 0.0
    if a > 0:
        out += a * math.log(a / b)
    if a < 1:
        out += (1 - a) * math.log((1 - a) / (1 - b))
    return out


BOUNDS: dict[str, RiskBound] = {b.name: b for b in (BinomialBound(), HoeffdingBentkusBound())}


def get_bound(name: str) -> RiskBound:
    try:
        return BOUNDS[name]
    except KeyError:
        raise ConfigError(f"unknown bound {name!r}; use one of {', '.join(BOUNDS)}") from None


def check_levels(epsilon: float, delta: float) -> None:
    """ε (the allowed drop) and δ (the allowed failure probability) must lie in (0, 1)."""
    if not 0.0 < epsilon < 1.0:
        raise ConfigError(f"--max-drop must be in (0, 1) to certify it (e.g. 0.01 = 1 point), "
                          f"got {epsilon}")
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"--delta must be in (0, 1) (e.g. 0.1 = a 90 % guarantee), got {delta}")


def losses(table: ExitTable, thresholds: Sequence[float]) -> np.ndarray:
    """L_i(λ) = 1[full network correct on i ∧ early-exit prediction wrong on i] (bool, N)."""
    exits = table.assign(np.asarray(thresholds, np.float64))
    ee_correct = table.correct[exits, np.arange(table.n)]
    return table.correct[-1] & ~ee_correct


def samples_needed(epsilon: float, delta: float, bound: str = "binomial",
                   risk: float = 0.0, limit: int = 10_000_000) -> int | None:
    """The smallest n at which a point with empirical risk `risk` (< ε) would certify.

    With `risk` = 0 this is the least calibration sample that can certify any saving at all
    ((1 − ε)^n ≤ δ for both bounds). None when `risk` ≥ ε (never certifiable).
    """
    check_levels(epsilon, delta)
    if risk >= epsilon:
        return None
    b = get_bound(bound)
    lo, hi = 1, 1
    while b.p_value(risk, hi, epsilon) > delta:
        lo, hi = hi, hi * 2
        if hi > limit:
            return None
    while lo < hi:  # p-value is not exactly monotone in n (floors); bisect to the first pass
        mid = (lo + hi) // 2
        if b.p_value(risk, mid, epsilon) <= delta:
            hi = mid
        else:
            lo = mid + 1
    return hi


@dataclass(frozen=True)
class Certificate:
    """The outcome of fixed-sequence testing on one calibration table."""

    epsilon: float
    delta: float
    bound: str
    n: int
    certified: bool
    tested: int  # path points tested (certified ones + the first failure, if any)
    point: OperatingPoint | None  # cheapest certified point, on the calibration set
    empirical_risk: float | None
    risk_upper_bound: float | None
    samples_needed: int | None
    index: int | None = None  # position of `point` in the path

    def to_json(self) -> dict:
        return {"epsilon": float(self.epsilon), "delta": float(self.delta), "bound": self.bound,
                "n": int(self.n), "certified": bool(self.certified), "tested": int(self.tested),
                "point": None if self.point is None else self.point.to_json(),
                "empirical_risk": self.empirical_risk,
                "risk_upper_bound": self.risk_upper_bound,
                "samples_needed": self.samples_needed}


def conservative_first(path: Sequence[OperatingPoint]) -> list[OperatingPoint]:
    """The path ordered most expensive (most conservative) first; stable for ties."""
    return sorted(path, key=lambda p: -p.cost_fraction)


def certify(table: ExitTable, path: Sequence[OperatingPoint], epsilon: float, delta: float,
            bound: str = "binomial") -> Certificate:
    """Fixed-sequence testing along `path` (ordered most conservative first) on `table`.

    The first point that costs less than the full network and has p ≤ δ starts the
    certified run; the walk stops at the first p > δ. Points costing the full network
    (all exits off, zero loss by definition) are skipped, not tested.
    """
    check_levels(epsilon, delta)
    b = get_bound(bound)
    n = table.n
    tested, best, best_i, best_risk = 0, None, None, None
    for i, p in enumerate(path):
        if p.cost_fraction >= 1.0 - 1e-12 and not np.isfinite(p.thresholds).any():
            continue
        risk = float(losses(table, p.thresholds).mean())
        tested += 1
        if b.p_value(risk, n, epsilon) > delta:
            break
        best, best_i, best_risk = p, i, risk
    needed = _needed_for_first_saving(table, path, epsilon, delta, bound)
    if best is None:
        return Certificate(epsilon, delta, bound, n, False, tested, None, None, None, needed)
    on_calib = table.evaluate(np.asarray(best.thresholds))
    return Certificate(epsilon, delta, bound, n, True, tested, on_calib, best_risk,
                       b.upper_bound(best_risk, n, delta), needed, best_i)


def _needed_for_first_saving(table: ExitTable, path: Sequence[OperatingPoint], epsilon: float,
                             delta: float, bound: str) -> int | None:
    """Calibration samples needed to certify the path's first saving at its observed risk
    (at zero risk when that is already ≥ ε: the least any certificate needs)."""
    first = next((p for p in path if np.isfinite(p.thresholds).any()), None)
    risk = 0.0 if first is None else float(losses(table, first.thresholds).mean())
    return samples_needed(epsilon, delta, bound, risk if risk < epsilon else 0.0)


def risk_curve(table: ExitTable, path: Sequence[OperatingPoint], delta: float | None,
               bound: str = "binomial", max_points: int = 60) -> list[list[float | None]]:
    """[cost_fraction, empirical risk, (1 − δ) upper bound or None] per (thinned) path point."""
    step = max(1, math.ceil(len(path) / max_points))
    pts = list(path[::step])
    if path and pts[-1] is not path[-1]:
        pts = [*pts[: max_points - 1], path[-1]]
    b = get_bound(bound)
    out: list[list[float | None]] = []
    for p in pts:
        r = float(losses(table, p.thresholds).mean())
        ub = None if delta is None else b.upper_bound(r, table.n, delta)
        out.append([float(p.cost_fraction), r, ub])
    return out
