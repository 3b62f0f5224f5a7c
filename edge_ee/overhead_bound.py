"""The worst-case overhead bound of a threshold search (`--max-overhead`).

An input that takes no exit runs the whole network **and** every kept exit: its head and,
in a split bundle, a segment boundary, in an in-graph bundle the `If` and the layout
reorders around it. Those per-exit costs are what the threshold search charges
(`CostTable.heads_array`: head FLOPs plus the measured boundary as FLOPs-equivalent;
`edge_ee.boundary` on the host, `edge_ee.overheads` from a device). The bound caps their
sum, as a fraction of the full network, so the exits-off latency stays within
(1 + bound) × the network without exits whenever the charges are right; the search admits
only such exit sets (`edge_ee.calibrate.greedy_path` / `random_hull`).

`auto` (the default) is `DEFAULT_MAX_OVERHEAD` = 0.05 when the charges are measured
(`--latency-aware`, `--overheads`) — issue 15's exits-off goal, ≤ 1.05 × the full network
— and no bound with pure FLOPs (there the charges are head FLOPs only, a few per mille).
An explicit bound that admits no exit at all is a `CalibrationError` naming the smallest
bound that would. Under `auto` the bound is instead raised to the cheapest exit's own
charge when that is at most `AUTO_MAX_OVERHEAD` = 0.10 (one exit kept: a loaded machine
measures exits a grid step or two dearer, and `edge-ee demo` should still save), else the
full network is exported; both with a warning, and the record holds the bound in force.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge_ee.calibrate import ExitTable, cheapest_exit, no_exit_fits
from edge_ee.errors import CalibrationError, ConfigError

#: `--max-overhead auto` with measured charges (see the module docstring)
DEFAULT_MAX_OVERHEAD = 0.05
#: the most `auto` raises its bound to when no exit fits DEFAULT_MAX_OVERHEAD (`admit`)
AUTO_MAX_OVERHEAD = 0.10
#: whose per-exit cost a measured charge is (`auto`: in-graph, what an ONNX bundle runs
#: under a bound — the runner's `--strategy auto` runs the charged one; no ONNX: `split`)
CHARGE_STRATEGIES = ("auto", "split", "ingraph")


def check_fields(max_overhead: Any, strategy: str) -> None:
    """ConfigError for a bound that is not 'auto', None or a finite fraction ≥ 0, or an
    unknown charge strategy."""
    mo = max_overhead
    if (isinstance(mo, str) and mo != "auto") or (
            isinstance(mo, int | float) and not (math.isfinite(mo) and mo >= 0)):
        raise ConfigError(f"--max-overhead must be 'auto', 'none' or a fraction ≥ 0 of the "
                          f"full network (e.g. 0.05), got {mo!r}")
    if strategy not in CHARGE_STRATEGIES:
        raise ConfigError(f"--charge-strategy must be one of {', '.join(CHARGE_STRATEGIES)}, "
                          f"got {strategy!r}")


def resolve(max_overhead: float | str | None, measured: bool) -> float | None:
    """The bound in force: 'auto' → DEFAULT_MAX_OVERHEAD with measured charges, else None."""
    if max_overhead == "auto":
        return DEFAULT_MAX_OVERHEAD if measured else None
    return None if max_overhead is None else float(max_overhead)


def admit(table: ExitTable, bound: float | None, requested: float | str | None,
          warn: Callable[[str], None]) -> float | None:
    """The bound the search uses. An explicit bound that admits no exit raises
    CalibrationError. Under 'auto', when the default admits no exit but the cheapest exit is
    charged at most AUTO_MAX_OVERHEAD on its own, the bound is raised to that charge (a
    loaded machine measures an exit a grid step or two dearer than a quiet one, and a main
    job that keeps no exit saves nothing); beyond that the full network (all exits off).
    Both are warned; the record says which bound was in force."""
    why = no_exit_fits(table, bound)
    if why is None:
        return bound
    if requested != "auto":
        raise CalibrationError(why)
    cheap = cheapest_exit(table)
    if cheap is not None and cheap[1] <= AUTO_MAX_OVERHEAD + 1e-12:
        i, charge = cheap
        warn(f"the default --max-overhead auto = {bound:g} admits no exit on this machine's "
             f"measurement; raised to {charge:.4f}, what the cheapest exit (exit {i}) is "
             f"charged on its own, so that one exit can be kept (exits-off latency ≈ "
             f"{1 + charge:.2f} × the network); give --max-overhead to fix the bound")
        return charge
    warn(f"{why.replace('--max-overhead', 'the default --max-overhead auto =', 1)}; "
         "exporting the full network (all exits off)")
    return bound


def record(bound: float | None, requested: float | str | None, priced: ExitTable,
           thresholds: Sequence[float], strategy: str | None = None) -> dict[str, Any]:
    """The calibration record's `overhead_bound`: the bound, what the kept exits are charged
    in total (priced with the search's charges), which exits are kept, and the strategy
    whose costs were charged (None: pure FLOPs / given charges); `edge-ee-run --strategy
    auto` runs that strategy when a bound was in force."""
    thr = np.asarray(thresholds, np.float64)
    charged = priced.overhead_fraction(thr)
    if bound is not None and charged > bound + 1e-9:  # pragma: no cover - search invariant
        raise CalibrationError(f"internal: the chosen exits are charged {charged:.4f} > "
                               f"--max-overhead {bound:g}; please report it")
    return {"max_overhead": bound, "requested": requested, "charged": charged,
            "strategy": strategy,
            "kept_exits": [int(i) for i in np.flatnonzero(priced.enabled(thr)[:-1])],
            "meaning": "charged = summed charged cost (head + boundary) of the kept exits / "
                       "full network: exits-off latency ≈ (1 + charged) × the network "
                       "without exits, when the charges are right"}
