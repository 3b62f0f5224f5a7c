"""The host flow in one place: fit training-free exits, calibrate thresholds, export a bundle.

`fit_exits` runs the statistics pass on the training part, the scoring pass on a
calibration part held out of the same training split, finalises the heads, and builds
the `ExitTable` from which thresholds are chosen. `choose_thresholds` applies one of
the threshold searches; `export` writes and validates the bundle.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from converters.bundle import BundleSpec, write_bundle
from converters.quantize import Int8Tolerance
from converters.segments import monolithic_plan, plan_segments
from converters.validate import Tolerance
from edge_ee.calibrate import (
    ExitTable,
    OperatingPoint,
    greedy_path,
    pick_budget,
    pick_max_drop,
    random_hull,
)
from edge_ee.cost import CostTable, cost_table
from edge_ee.data import ImageSplit, split_indices
from edge_ee.errors import CalibrationError, ConfigError
from edge_ee.exitnet import ExitNet
from edge_ee.exits import ExitSpec
from edge_ee.exits.fit import (
    ExitScores,
    build_heads,
    decisions,
    finalize_heads,
    fit_statistics,
    score_split,
)
from edge_ee.exits.heads import ExitHead


@dataclass(frozen=True)
class FitConfig:
    """Training-free exit fitting and threshold calibration (CLI flags map 1:1)."""

    exit_spec: ExitSpec = field(default_factory=ExitSpec)
    exits: tuple[int, ...] | None = None  # exit points that get a head; None = all
    exit_at: tuple[tuple[int, ExitSpec], ...] = ()  # per-exit overrides of exit_spec
    calib_fraction: float = 0.1
    search: str = "greedy"  # greedy | random
    random_vectors: int = 100
    max_drop: float = 0.01
    budget: float | None = None  # cost fraction; overrides max_drop when set
    batch_size: int = 256
    seed: int = 0
    # FLOPs-equivalent charged per kept exit in the threshold search (the segment boundary
    # it adds), one value or one per exit; 0 = pure FLOPs. Reported costs are always pure FLOPs.
    exit_overhead_flops: float | tuple[float, ...] = 0.0
    # measure each exit's boundary cost on this machine (edge_ee.boundary) and charge that
    latency_aware: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.calib_fraction < 1.0:
            raise ConfigError(f"calib_fraction must be in (0, 1), got {self.calib_fraction}")
        if self.search not in ("greedy", "random"):
            raise ConfigError(f"search must be 'greedy' or 'random', got {self.search!r}")
        if self.budget is not None and not 0.0 < self.budget <= 1.0:
            raise ConfigError(f"budget must be a cost fraction in (0, 1], got {self.budget}")

    def variant(self, num_exits: int) -> list[ExitSpec | None]:
        keep = set(range(num_exits)) if self.exits is None else set(self.exits)
        bad = sorted(k for k in keep if not 0 <= k < num_exits)
        if bad:
            raise ConfigError(f"exit points {bad} do not exist; this model has 0..{num_exits - 1}")
        over = dict(self.exit_at)
        bad = sorted(k for k in over if not 0 <= k < num_exits)
        if bad:
            raise ConfigError(f"--exit-at names exit points {bad}; this model has 0..{num_exits - 1}")
        return [over.get(i, self.exit_spec) if i in keep or i in over else None
                for i in range(num_exits)]


@dataclass
class FittedExits:
    heads: list[ExitHead | None]
    costs: CostTable
    calib: ExitTable
    fit_seconds: float
    path: list[OperatingPoint]
    chosen: OperatingPoint | None = None
    config: FitConfig | None = None  # what fit_exits used (measured boundary costs included)
    exit_overhead: dict | None = None  # how the charged boundary costs were measured, and where


def table_for(heads: Sequence[ExitHead | None], scores: ExitScores, costs: CostTable) -> ExitTable:
    pred, conf, has = decisions(heads, scores)
    return ExitTable(pred, conf, scores.labels.numpy(), costs, has)


def fit_variants(net: ExitNet, train: ImageSplit, variants: Sequence[Sequence[ExitSpec | None]],
                 calib_fraction: float = 0.1, batch_size: int = 256, seed: int = 0,
                 progress: bool = True) -> tuple[list[list[ExitHead | None]], list[ExitScores],
                                                 float]:
    """Statistics on the training part, scores on the held-out calibration part, finalised."""
    stats_idx, calib_idx = split_indices(len(train), calib_fraction, seed)
    t0 = time.perf_counter()
    stats = fit_statistics(net, variants, train.subset(stats_idx), batch_size, progress)
    head_sets = [build_heads(s, v) for s, v in zip(stats, variants, strict=True)]
    calib = score_split(net, head_sets, train.subset(calib_idx), batch_size, progress,
                        "calibration scores")
    for hs, v, st, sc in zip(head_sets, variants, stats, calib, strict=True):
        finalize_heads(hs, v, st, sc)
    return head_sets, calib, time.perf_counter() - t0


def fit_exits(net: ExitNet, train: ImageSplit, cfg: FitConfig, progress: bool = True,
              choose: bool = True) -> FittedExits:
    """Fit the heads; with `choose`, also the thresholds. With `cfg.latency_aware` the boundary
    costs measured here are written into `fitted.config` (and so into the calibration record)."""
    variant = cfg.variant(net.num_exits)
    (heads,), (calib,), secs = fit_variants(net, train, [variant], cfg.calib_fraction,
                                            cfg.batch_size, cfg.seed, progress)
    costs = cost_table(net, heads)
    table = table_for(heads, calib, costs)
    overhead = None
    if cfg.latency_aware:
        from edge_ee.boundary import measure_boundaries
        measured = measure_boundaries(net, heads, costs.full_flops, costs.head_flops)
        cfg = replace(cfg, exit_overhead_flops=measured.overhead_flops)
        overhead = measured.to_json()
    fitted = FittedExits(heads, costs, table, secs, [], config=cfg, exit_overhead=overhead)
    if choose:
        choose_thresholds(fitted, cfg, progress)
    return fitted


def choose_thresholds(fitted: FittedExits, cfg: FitConfig, progress: bool = True) -> OperatingPoint:
    """Search thresholds on the calibration table and set them in the heads."""
    table = fitted.calib
    if cfg.exit_overhead_flops:
        table = table.with_costs(replace(table.costs, exit_overhead_flops=cfg.exit_overhead_flops))
    if cfg.search == "greedy":
        path = greedy_path(table, progress=progress)
    else:
        path = random_hull(table, cfg.random_vectors, cfg.seed)
    if cfg.budget is not None:
        point = pick_budget(path, cfg.budget)
        if point is None:
            cheapest = min(p.cost_fraction for p in path)
            raise CalibrationError(f"no thresholds reach cost {cfg.budget:.2f}; the cheapest "
                                   f"found costs {cheapest:.2f} — raise the budget")
    else:
        point = pick_max_drop(path, cfg.max_drop)
    # chosen with the search's prices; reported in pure FLOPs
    fitted.path = [fitted.calib.evaluate(np.asarray(p.thresholds)) for p in path]
    fitted.chosen = fitted.path[path.index(point)]
    set_thresholds(fitted.heads, point.thresholds)
    return fitted.chosen


def calibration_record(fitted: FittedExits, cfg: FitConfig, test: ExitTable,
                       max_points: int = 60) -> dict:
    """What the manifest records of calibration: the chosen point on both splits, and the
    accuracy-versus-cost curve of the threshold path on the calibration and held-out splits
    (`curve.calibration` / `curve.test`: lists of [cost_fraction, accuracy])."""
    cfg = fitted.config or cfg
    step = max(1, len(fitted.path) // max_points)
    pts = fitted.path[::step] + ([fitted.path[-1]] if len(fitted.path) % step != 1 else [])
    held = [test.evaluate(np.asarray(p.thresholds)) for p in pts]
    on_test = test.evaluate(np.asarray(fitted.chosen.thresholds))
    return {
        "split": f"held-out {cfg.calib_fraction:.0%} of the training split",
        "exit_spec": cfg.exit_spec.label, "search": cfg.search, "max_drop": cfg.max_drop,
        "budget": cfg.budget, "exit_overhead_flops": cfg.exit_overhead_flops,
        "latency_aware": cfg.latency_aware, "exit_overhead": fitted.exit_overhead,
        "fit_seconds": fitted.fit_seconds,
        "point": fitted.chosen.to_json(), "test_point": on_test.to_json(),
        "full_accuracy": {"calibration": fitted.calib.full_accuracy, "test": test.full_accuracy},
        "curve": {"calibration": [[p.cost_fraction, p.accuracy] for p in pts],
                  "test": [[p.cost_fraction, p.accuracy] for p in held]},
    }


def set_thresholds(heads: Sequence[ExitHead | None], thresholds: Sequence[float]) -> None:
    for h, t in zip(heads, thresholds, strict=True):
        if h is not None:
            h.set_threshold(t)


def evaluate_split(net: ExitNet, heads: Sequence[ExitHead | None], data: ImageSplit,
                   costs: CostTable, batch_size: int = 256, progress: bool = True) -> ExitTable:
    """An ExitTable on another split (e.g. test) for the same heads."""
    (scores,) = score_split(net, [heads], data, batch_size, progress, "test scores")
    return table_for(heads, scores, costs)


def export(net: ExitNet, heads: Sequence[ExitHead | None], out_dir: str | Path,
           data: ImageSplit, name: str, calibration: dict | None = None,
           source_sha256: str | None = None, monolithic: bool = False,
           validation_samples: int = 64, overwrite: bool = False,
           tol: Tolerance = Tolerance(), formats: Sequence[str] = ("onnx",), int8: bool = False,
           calibration_data: ImageSplit | np.ndarray | None = None,
           calibration_samples: int = 256, int8_heads: str = "auto",
           int8_tol: Int8Tolerance = Int8Tolerance()) -> Path:
    """Export the bundle, validated on `validation_samples` real samples of `data`.

    `formats`: ("onnx",), ("tflite",) or both. `int8`: also int8 files of each format,
    calibrated on `calibration_samples` random samples of `calibration_data` (an
    ImageSplit, e.g. the training split, or normalised inputs (N, C, H, W))."""
    plans = monolithic_plan(net) if monolithic else plan_segments(net, heads)
    vx = data.subset(np.arange(min(validation_samples, len(data)))).normalised()
    spec = BundleSpec(name=name, classes=tuple(data.classes), input_shape=net.input_shape,
                      mean=tuple(data.mean), std=tuple(data.std), source_sha256=source_sha256,
                      granularity=net.granularity)
    with torch.no_grad():
        full = cost_table(net, [None] * net.num_exits).full_flops
        return write_bundle(plans, spec, out_dir, vx, calibration=calibration,
                            overwrite=overwrite, tol=tol, full_flops=full, formats=formats,
                            int8=int8, calibration_x=_calibration_x(calibration_data,
                                                                    calibration_samples, int8),
                            int8_heads=int8_heads, int8_tol=int8_tol)


def _calibration_x(data: ImageSplit | np.ndarray | None, n: int, int8: bool) -> np.ndarray | None:
    """`n` random normalised samples of an ImageSplit (seed 0); arrays pass through."""
    if not int8 or data is None or isinstance(data, np.ndarray):
        return data
    idx = np.sort(np.random.default_rng(0).choice(len(data), min(n, len(data)), replace=False))
    return data.subset(idx).normalised()
