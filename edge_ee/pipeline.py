"""The host flow in one place: fit training-free exits, calibrate thresholds, export a bundle.

`fit_exits` runs the statistics pass on the training part, the scoring pass on a part
held out of the same training split (the normaliser ν, the temperature and the threshold
*search* use it), finalises the heads, and builds the `ExitTable`s: `calib`, the search
table, and — when calibration data the backbone has not seen is given — `certify_table`
on it. `choose_thresholds` searches the threshold path on the held-out part and picks
the point on the calibration set: the cheapest within `max_drop` (uncertified), the
cheapest certified one (`delta`, METHODS §6), or one within a cost budget. `export`
writes and validates the bundle.

The path is searched on the training hold-out, never on the calibration set, so its
order is fixed before the calibration losses are seen (what fixed-sequence testing
needs); ν and the temperature also stay on the hold-out, so the heads are independent of
the calibration set too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

import edge_ee
import edge_ee.overhead_bound as ob
from converters.chain_bundle import write_chain_bundle
from converters.quantize import Int8Tolerance
from converters.spec import BundleSpec, image_input
from converters.validate import Tolerance
from edge_ee.calib_source import TRAIN_HOLDOUT_WARNING, source_record
from edge_ee.calibrate import (
    ExitTable,
    OperatingPoint,
    greedy_path,
    pick_budget,
    pick_max_drop,
    random_hull,
    refine_path,
)
from edge_ee.certify import BOUNDS, Certificate, certify, check_levels, conservative_first, risk_curve
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
from edge_ee.segments import monolithic_plan, plan_segments

log = logging.getLogger(__name__)


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
    # charge the costs a device measured (edge-ee-run --measure-overheads) instead: a file path
    overheads: str | None = None
    # certified thresholds (METHODS §6): P(E[drop loss] ≤ max_drop) ≥ 1 − delta; None = uncertified
    delta: float | None = None
    bound: str = "binomial"  # binomial | hoeffding_bentkus
    allow_uncertified: bool = False  # nothing certified: export the uncertified point, not the full net
    calib_data: str | None = None  # labelled data the backbone never saw (.npz, 'test', dataset path)
    calib_samples: int | None = None  # class-balanced random subset of calib_data; None = all
    refine: int = 8  # with delta: points inserted between path steps (calibrate.refine_path)
    # worst-case bound on the kept exits' summed charged cost / full network (edge_ee.
    # overhead_bound): "auto" = 0.05 with measured charges, else none; None = no bound
    max_overhead: float | str | None = "auto"
    strategy: str = "auto"  # whose per-exit cost is charged: split | ingraph | auto

    def __post_init__(self) -> None:
        if not 0.0 < self.calib_fraction < 1.0:
            raise ConfigError(f"calib_fraction must be in (0, 1), got {self.calib_fraction}")
        if self.search not in ("greedy", "random"):
            raise ConfigError(f"search must be 'greedy' or 'random', got {self.search!r}")
        if self.budget is not None and not 0.0 < self.budget <= 1.0:
            raise ConfigError(f"budget must be a cost fraction in (0, 1], got {self.budget}")
        if self.bound not in BOUNDS:
            raise ConfigError(f"bound must be one of {', '.join(BOUNDS)}, got {self.bound!r}")
        if self.delta is not None:
            check_levels(self.max_drop, self.delta)
            if self.budget is not None:
                raise ConfigError("--delta certifies --max-drop; drop --budget (a budget is "
                                  "not a certified quantity)")
        if self.refine < 0:
            raise ConfigError(f"--refine must be ≥ 0, got {self.refine}")
        if self.calib_samples is not None and self.calib_samples < 1:
            raise ConfigError(f"--calib-samples must be ≥ 1, got {self.calib_samples}")
        ob.check_fields(self.max_overhead, self.strategy)

    def overhead_bound(self) -> float | None:
        """The worst-case bound in force: `max_overhead`, with "auto" resolved (see the field)."""
        return ob.resolve(self.max_overhead, bool(self.latency_aware or self.overheads))

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
    certify_table: ExitTable | None = None  # the calibration set (None: the training hold-out)
    source: dict | None = None  # calibration["source"]: {kind, n, sha256, warning}
    certificate: Certificate | None = None
    messages: list[str] = field(default_factory=list)  # warnings for the user (also logged)
    exit_overhead: dict | None = None  # how the charged boundary costs were measured, and where
    overhead: dict | None = None  # the worst-case bound and the chosen exits' charged total

    def warn(self, msg: str) -> None:
        """Log a warning for the user and keep it in `messages`."""
        log.warning(msg)
        self.messages.append(msg)

    @property
    def selection_table(self) -> ExitTable:
        """Where the operating point is chosen/certified: calibration data, else the hold-out."""
        return self.certify_table if self.certify_table is not None else self.calib


def table_for(heads: Sequence[ExitHead | None], scores: ExitScores, costs: CostTable) -> ExitTable:
    pred, conf, has = decisions(heads, scores)
    return ExitTable(pred, conf, scores.labels.numpy(), costs, has)


def fit_variants(net: ExitNet, train: ImageSplit, variants: Sequence[Sequence[ExitSpec | None]],
                 calib_fraction: float = 0.1, batch_size: int = 256, seed: int = 0,
                 progress: bool = True) -> tuple[list[list[ExitHead | None]], list[ExitScores],
                                                 float]:
    """Statistics on the training part, scores on the held-out part, finalised."""
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
              choose: bool = True, calib_data: ImageSplit | None = None) -> FittedExits:
    """Fit the heads; with `choose`, also the thresholds. With `cfg.overheads` (a device's
    measured file) or `cfg.latency_aware` (measured here) the boundary costs charged are
    written into `fitted.config` (and so into the calibration record, with their source).

    `calib_data`: labelled samples the backbone was not trained on (checked by the caller:
    `calib_source.check_disjoint`); thresholds are chosen/certified on them. Without it
    they are chosen on the training hold-out, with a warning in `fitted.messages`."""
    variant = cfg.variant(net.num_exits)
    (heads,), (calib,), secs = fit_variants(net, train, [variant], cfg.calib_fraction,
                                            cfg.batch_size, cfg.seed, progress)
    costs = cost_table(net, heads)
    table = table_for(heads, calib, costs)
    cert_table = None
    if calib_data is not None:
        t0 = time.perf_counter()
        (scores,) = score_split(net, [heads], calib_data, cfg.batch_size, progress,
                                "calibration-set scores")
        cert_table = table_for(heads, scores, costs)
        secs += time.perf_counter() - t0
    overhead = None
    if cfg.overheads is not None:
        from edge_ee.candidates import candidate_identity
        from edge_ee.overheads import device_overheads
        charged, overhead = device_overheads(cfg.overheads, candidate_identity(net, heads, costs),
                                             costs.head_flops, cfg.strategy)
        cfg = replace(cfg, exit_overhead_flops=charged)
    elif cfg.latency_aware:
        from edge_ee.boundary import BoundaryProtocol
        from edge_ee.hysteresis import stable_boundaries
        measured = stable_boundaries(net, heads, costs.full_flops, costs.head_flops,
                                     BoundaryProtocol(strategy=cfg.strategy))
        cfg = replace(cfg, exit_overhead_flops=measured.overhead_flops)
        overhead = measured.to_json()
    fitted = FittedExits(heads, costs, table, secs, [], config=cfg, certify_table=cert_table,
                         exit_overhead=overhead)
    if calib_data is not None:
        fitted.source = source_record("calib-data", calib_data)
    else:
        _, hold_idx = split_indices(len(train), cfg.calib_fraction, cfg.seed)
        fitted.source = source_record("train-holdout", train.subset(hold_idx),
                                      TRAIN_HOLDOUT_WARNING)
        fitted.warn(TRAIN_HOLDOUT_WARNING)
    if choose:
        choose_thresholds(fitted, cfg, progress)
    return fitted


def choose_thresholds(fitted: FittedExits, cfg: FitConfig, progress: bool = True) -> OperatingPoint:
    """Search the threshold path on the hold-out table, pick the point on the selection table
    (calibration data when given), and set its thresholds in the heads.

    With `cfg.delta`: fixed-sequence testing along the path (most conservative first); the
    cheapest certified point, else the full network (all exits off), or the uncertified
    pick with `cfg.allow_uncertified`. The path holds only exit sets within the worst-case
    bound (`cfg.overhead_bound()`, `edge_ee.overhead_bound`); `fitted.overhead` records it.
    Messages for the user go to `fitted.messages`."""
    search, sel = fitted.calib, fitted.selection_table
    if cfg.exit_overhead_flops:
        over = replace(search.costs, exit_overhead_flops=cfg.exit_overhead_flops)
        search, sel_priced = search.with_costs(over), sel.with_costs(over)
    else:
        sel_priced = sel
    bound = ob.admit(search, cfg.overhead_bound(), cfg.max_overhead, fitted.warn)
    if cfg.search == "greedy":
        path = greedy_path(search, progress=progress, max_overhead=bound)
    else:
        path = conservative_first(random_hull(search, cfg.random_vectors, cfg.seed,
                                              max_overhead=bound))
    if cfg.delta is not None:  # finer steps: a fixed-sequence walk pays nothing for length
        path = refine_path(search, path, cfg.refine)
    # the path's thresholds, priced for the search and in pure FLOPs, on the selection table
    priced = path if sel is fitted.calib else \
        [sel_priced.evaluate(np.asarray(p.thresholds)) for p in path]
    fitted.path = [sel.evaluate(np.asarray(p.thresholds)) for p in path]
    if cfg.budget is not None:
        point = pick_budget(priced, cfg.budget)
        if point is None:
            cheapest = min(p.cost_fraction for p in priced)
            within = "" if bound is None else f" with exits charged ≤ {bound:g} in total"
            raise CalibrationError(f"no thresholds reach cost {cfg.budget:.2f}{within}; the "
                                   f"cheapest found costs {cheapest:.2f} — raise the budget"
                                   + ("" if bound is None else " or --max-overhead"))
        thresholds = point.thresholds
    else:
        thresholds = pick_max_drop(priced, cfg.max_drop).thresholds
    if cfg.delta is not None:
        thresholds = _certified_choice(fitted, cfg, thresholds)
    fitted.chosen = sel.evaluate(np.asarray(thresholds))
    fitted.overhead = ob.record(bound, cfg.max_overhead, sel_priced, thresholds,
                                (fitted.exit_overhead or {}).get("strategy"))
    set_thresholds(fitted.heads, thresholds)
    return fitted.chosen


def _certified_choice(fitted: FittedExits, cfg: FitConfig,
                      uncertified: tuple[float, ...]) -> tuple[float, ...]:
    """Certify along `fitted.path`; the thresholds to export (see `choose_thresholds`)."""
    cert = certify(fitted.selection_table, fitted.path, cfg.max_drop, cfg.delta, cfg.bound)
    fitted.certificate = cert
    if fitted.source and fitted.source["kind"] == "train-holdout":
        fitted.warn("the certificate holds for the training hold-out only, not for new "
                    "data (no --calib-data)")
    if cert.certified:
        log.info("certified cost %.3f, risk %.4f ≤ %.4f", cert.point.cost_fraction,
                 cert.empirical_risk, cert.risk_upper_bound)
        return cert.point.thresholds
    need = (f"; about {cert.samples_needed} calibration samples would be needed"
            if cert.samples_needed and cert.samples_needed > cert.n else "")
    msg = (f"no thresholds certified at drop ≤ {cfg.max_drop} with probability ≥ "
           f"{1 - cfg.delta:.3g} ({cfg.bound} bound, n = {cert.n}{need})")
    if cfg.allow_uncertified:
        msg += "; exporting the UNCERTIFIED pick (--allow-uncertified)"
        out = uncertified
    else:
        msg += "; exporting the full network (all exits off); --allow-uncertified exports " \
               "the uncertified pick instead"
        out = tuple([float("inf")] * fitted.calib.num_exits)
    fitted.warn(msg)
    return out


def certificate_json(fitted: FittedExits, cfg: FitConfig) -> dict | None:
    """The manifest's `calibration.certificate` (None when no --delta was given)."""
    return None if fitted.certificate is None else fitted.certificate.to_json()


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
    src = fitted.source or {}
    return {
        "split": ("the calibration data (--calib-data)" if src.get("kind") == "calib-data"
                  else f"held-out {cfg.calib_fraction:.0%} of the training split"),
        "search_split": f"held-out {cfg.calib_fraction:.0%} of the training split",
        "source": fitted.source,
        "guarantee": _guarantee(fitted, cfg),
        "certificate": certificate_json(fitted, cfg),
        "risk_curve": risk_curve(fitted.selection_table, fitted.path, cfg.delta, cfg.bound,
                                 max_points),
        "exit_spec": cfg.exit_spec.label, "search": cfg.search, "max_drop": cfg.max_drop,
        "budget": cfg.budget, "exit_overhead_flops": cfg.exit_overhead_flops,
        "latency_aware": cfg.latency_aware, "exit_overhead": fitted.exit_overhead,
        "overhead_bound": fitted.overhead,
        "fit_seconds": fitted.fit_seconds,
        "point": fitted.chosen.to_json(), "test_point": on_test.to_json(),
        "full_accuracy": {"calibration": fitted.calib.full_accuracy, "test": test.full_accuracy},
        "curve": {"calibration": [[p.cost_fraction, p.accuracy] for p in pts],
                  "test": [[p.cost_fraction, p.accuracy] for p in held]},
    }


def _guarantee(fitted: FittedExits, cfg: FitConfig) -> str:
    """One line: certified / not certified (and what was exported) / uncertified search."""
    c = fitted.certificate
    if c is None:
        return "uncertified: chosen on the calibration sample without --delta; the drop on " \
               "new data is not bounded"
    if c.certified:
        caveat = "" if (fitted.source or {}).get("kind") == "calib-data" else \
            " — on the TRAINING hold-out, so not valid for new data"
        return (f"certified: P(expected drop ≤ {c.epsilon}) ≥ {1 - c.delta:.3g} over the "
                f"calibration sample ({c.bound}, n = {c.n}){caveat}")
    what = "uncertified point exported (--allow-uncertified)" if cfg.allow_uncertified \
        else "full network exported (all exits off)"
    return f"not certified: {what}"


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
           int8_tol: Int8Tolerance = Int8Tolerance(), task: str = "classification",
           candidates: bool = False, int8_thresholds=None,
           ingraph: bool = True) -> Path:
    """Export the bundle, validated on `validation_samples` real samples of `data`.

    `formats`: ("onnx",), ("tflite",) or both. `int8`: also int8 files of each format,
    calibrated on `calibration_samples` random samples of `calibration_data` (an
    ImageSplit, e.g. the training split, or normalised inputs (N, C, H, W)).
    `candidates`: also the graphs that let the device measure every exit with a head
    (`edge_ee.candidates`; `edge-ee-run --measure-overheads`). `int8_thresholds`: the hook
    that calibrates int8 files on their own scores (`edge_ee.int8_calibration`).
    `ingraph`: also the exits as ONNX `If` in one graph (docs/ingraph.md), when there are exits."""
    plans = monolithic_plan(net) if monolithic else plan_segments(net, heads)
    vx = data.subset(np.arange(min(validation_samples, len(data)))).normalised()
    spec = BundleSpec(name=name, classes=tuple(data.classes),
                      input=image_input(net.input_shape, tuple(data.mean), tuple(data.std),
                                        raw_geometry=getattr(data, "raw_geometry", None)),
                      source_sha256=source_sha256, granularity=net.granularity, task=task,
                      provenance={"edge_ee_version": edge_ee.__version__})
    extra, section = None, None
    if candidates and any(h is not None for h in heads):
        from edge_ee.candidates import candidate_graphs
        extra, cand = candidate_graphs(net, heads, cost_table(net, heads), "onnx" in formats)
        section = {"candidates": cand}
    with torch.no_grad():
        full = cost_table(net, [None] * net.num_exits).full_flops
        return write_chain_bundle(plans, spec, out_dir, vx, calibration=calibration,
                            overwrite=overwrite, tol=tol, full_flops=full, formats=formats,
                            int8=int8, calibration_x=_calibration_x(calibration_data,
                                                                    calibration_samples, int8),
                            int8_heads=int8_heads, int8_tol=int8_tol,
                            extra_graphs=extra, task_section=section,
                            int8_thresholds=int8_thresholds, ingraph=ingraph)


def _calibration_x(data: ImageSplit | np.ndarray | None, n: int, int8: bool) -> np.ndarray | None:
    """`n` random normalised samples of an ImageSplit (seed 0); arrays pass through."""
    if not int8 or data is None or isinstance(data, np.ndarray):
        return data
    idx = np.sort(np.random.default_rng(0).choice(len(data), min(n, len(data)), replace=False))
    return data.subset(idx).normalised()
