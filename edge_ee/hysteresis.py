"""Repeatable host boundary costs: keep the last measured value unless it really moved.

Quantising the measured boundary fractions (`edge_ee.boundary`) is not enough for repeated
`--latency-aware` builds to choose the same exits: a fraction near a grid edge rounds
either way from one build to the next. `stable_boundaries` therefore keeps, per machine,
runtime, threads and architecture (model name, input shape, FLOPs, exits with a head and
their head FLOPs), the record of the last measurement in a small JSON file under
`$EDGE_EE_BOUNDARY_CACHE`, else `$EDGE_EE_CACHE/boundaries/` (default
`~/.cache/edge-ee/boundaries/`). A new measurement whose every
raw fraction lies within the band of the kept one — `max(2 × grid, 4 × standard error
of either median)` — is reported but the kept quantised fractions are charged
(`hysteresis.kept_previous: true`); a larger move replaces the record. The record also
keeps which strategy was charged (`split` or `ingraph`, `edge_ee.boundary`): the new
measurement of that same strategy is compared, so an `auto` choice between two close
strategies does not flip from build to build either. The record is written atomically; an
unreadable one is ignored (and replaced) with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from device_runners.files import atomic_write_json
from edge_ee.boundary import BoundaryCosts, BoundaryProtocol, measure_boundaries
from edge_ee.exitnet import ExitNet
from edge_ee.exits.heads import ExitHead

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where kept measurements live: $EDGE_EE_BOUNDARY_CACHE, else boundaries/ in the data
    cache ($EDGE_EE_CACHE, default ~/.cache/edge-ee)."""
    own = os.environ.get("EDGE_EE_BOUNDARY_CACHE")
    if own:
        return Path(own)
    root = os.environ.get("EDGE_EE_CACHE") or Path.home() / ".cache" / "edge-ee"
    return Path(root) / "boundaries"


def _key(net: ExitNet, heads: Sequence[ExitHead | None], full_flops: int,
         head_flops: Sequence[int], protocol: BoundaryProtocol) -> str:
    import onnxruntime as ort
    what = {"host": platform.node(), "machine": platform.machine(), "ort": ort.__version__,
            "threads": protocol.threads, "grid": protocol.grid, "model": net.name,
            "strategy": protocol.strategy, "block": protocol.block,
            "input_shape": list(net.input_shape), "full_flops": int(full_flops),
            "exits": [[i, int(head_flops[i])] for i, h in enumerate(heads) if h is not None]}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def _read(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text())
        return rec if isinstance(rec, dict) and isinstance(rec.get("raw_fraction"), list) else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("ignoring the unreadable kept boundary measurement %s (%s); measuring anew",
                    path, err)
        return None


def band(costs_se: float, kept_se: float, grid: float) -> float:
    """How far a new raw fraction may lie from the kept one and still keep it."""
    return max(2 * grid, 4 * max(costs_se, kept_se))


def stable_boundaries(net: ExitNet, heads: Sequence[ExitHead | None], full_flops: int,
                      head_flops: Sequence[int],
                      protocol: BoundaryProtocol = BoundaryProtocol()) -> BoundaryCosts:
    """`measure_boundaries`, with hysteresis against this machine's kept measurement."""
    new = measure_boundaries(net, heads, full_flops, head_flops, protocol)
    path = cache_dir() / f"{_key(net, heads, full_flops, head_flops, protocol)}.json"
    return keep_or_replace(new, path, heads, full_flops, head_flops)


def keep_or_replace(new: BoundaryCosts, path: Path, heads: Sequence[ExitHead | None],
                    full_flops: int, head_flops: Sequence[int]) -> BoundaryCosts:
    """The hysteresis rule (module docstring) between `new` and the record at `path`."""
    protocol = new.protocol
    kept = _read(path)
    n = len(new.raw_fraction)
    strategy = kept.get("strategy", new.strategy) if kept is not None else new.strategy
    measured = (new.by_strategy or {}).get(strategy) or {"raw_fraction": new.raw_fraction,
                                                          "std_error": new.std_error}
    if kept is not None and len(kept["raw_fraction"]) == n and len(kept.get("fraction", [])) == n:
        kse = kept.get("std_error") or [0.0] * n
        raw_now, se_now = measured["raw_fraction"], measured["std_error"]
        moved = [i for i in range(n) if heads[i] is not None and abs(
            raw_now[i] - kept["raw_fraction"][i]) > band(se_now[i], kse[i], protocol.grid)]
        if not moved:
            frac = tuple(float(f) for f in kept["fraction"])
            flops = tuple(0.0 if heads[i] is None else max(0.0, frac[i] * full_flops
                                                           - head_flops[i]) for i in range(n))
            info = {"kept_previous": True, "file": str(path), "measured_raw_fraction":
                    list(raw_now), "kept_raw_fraction": kept["raw_fraction"],
                    "rule": "kept: every raw fraction within max(2·grid, 4·std error) of the "
                            "kept measurement"}
            log.info("boundary costs within the band of the kept measurement; charging %s "
                     "(%s)", frac, strategy)
            return replace(new, fraction=frac, overhead_flops=flops, hysteresis=info,
                           strategy=strategy, raw_fraction=tuple(raw_now),
                           std_error=tuple(se_now))
    info = {"kept_previous": False, "file": str(path),
            "rule": "no kept measurement within max(2·grid, 4·std error): this one is kept"}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"raw_fraction": list(new.raw_fraction),
                                 "fraction": list(new.fraction),
                                 "std_error": list(new.std_error), "rounds": new.rounds,
                                 "strategy": new.strategy})
    except OSError as err:
        log.warning("cannot keep the boundary measurement in %s (%s); repeated builds may "
                    "choose other exits — set EDGE_EE_BOUNDARY_CACHE to a writable folder", path,
                    err)
        info["file"] = None
    return replace(new, hysteresis=info)
