"""Thresholds of an int8 bundle chosen on that int8 chain's own scores (classification).

`threshold_hook` returns the hook `converters.int8_thresholds.recalibrate` calls once the
int8 files exist: it runs the int8 chain (every sample through every segment, its own
features forward) on the same two splits fp32 calibration used — the search split (the
held-out part of the training split) and the selection split (the `--calib-data` sample,
else that hold-out) — builds `ExitTable`s from the int8 predictions and confidences, and
chooses the thresholds with the same search, pick and certification
(`pipeline.choose_thresholds`) and the same charged boundary costs as fp32. Only the
bundle's exits can fire; the others stay off. The record holds the int8 operating point
(what its calibration promises), the fp32 one, and how often the int8 chain takes the
same exit with the same prediction as fp32 on the selection split (reported, not a goal).

`int8_thresholds_for` is the one place both `edge-ee build --int8` and
`edge_ee.api.export_bundle(..., int8=True)` decide which thresholds the int8 files get.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from edge_ee.calib_source import data_sha256
from edge_ee.calibrate import ExitTable
from edge_ee.data import ImageSplit, split_indices
from edge_ee.errors import ConfigError
from edge_ee.pipeline import FitConfig, FittedExits, choose_thresholds

Run = Callable[[int, np.ndarray], dict[str, np.ndarray]]


def int8_table(run: Run, exit_segments: list[int], exit_index: list[int], x: np.ndarray,
               labels: np.ndarray, fitted: FittedExits, batch: int = 256) -> ExitTable:
    """Predictions and confidences of every exit of the int8 chain on `x` (no exit taken)."""
    e_n, n = fitted.calib.num_exits, len(x)
    pred = np.zeros((e_n + 1, n), np.int64)
    conf = np.full((e_n + 1, n), -np.inf, np.float32)
    last = len(exit_segments)
    for s in range(0, n, batch):
        f = x[s : s + batch]
        for k in range(last + 1):
            out = run(k, f)
            row = exit_index[k] if k < last else e_n
            pred[row, s : s + len(f)] = out["prediction"]
            conf[row, s : s + len(f)] = out["confidence"]
            if k < last:
                f = out["feature"]
    has = np.zeros(e_n + 1, bool)
    has[[*exit_index[:last], e_n]] = True
    return ExitTable(pred, conf, labels, fitted.costs, has)


def threshold_hook(fitted: FittedExits, cfg: FitConfig, search: ImageSplit,
                   selection: ImageSplit | None, exit_index: list[int]
                   ) -> Callable[[Run, list[int]], dict[str, Any]]:
    """The hook for `write_chain_bundle(int8_thresholds=...)`; `exit_index[k]`: the exit
    point of exit segment k; `selection` None = choose on the search split too."""
    cfg = fitted.config or cfg

    def hook(run: Run, exit_segments: list[int]) -> dict[str, Any]:
        sx, sy = search.normalised(), search.labels
        s_table = int8_table(run, exit_segments, exit_index, sx, sy, fitted)
        c_table = None
        if selection is not None:
            c_table = int8_table(run, exit_segments, exit_index, selection.normalised(),
                                 selection.labels, fitted)
        e_n = fitted.calib.num_exits
        f8 = FittedExits([None] * e_n, fitted.costs, s_table, 0.0, [], config=cfg,
                         certify_table=c_table, source=fitted.source)
        point = choose_thresholds(f8, replace(cfg), progress=False)
        sel8, sel32 = f8.selection_table, fitted.selection_table
        thr8, thr32 = np.asarray(point.thresholds), np.asarray(fitted.chosen.thresholds)
        a8, a32 = sel8.assign(thr8), sel32.assign(thr32)
        cols = np.arange(sel8.n)
        same_exit = a8 == a32
        same = same_exit & (sel8.pred[a8, cols] == sel32.pred[a32, cols])
        fp32_on_int8 = sel8.evaluate(thr32)  # fp32 thresholds on int8 scores: the old way
        return {"thresholds": {k: float(point.thresholds[exit_index[k]])
                               for k in range(len(exit_segments))},
                "point": point.to_json(), "fp32_point": fitted.chosen.to_json(),
                "fp32_thresholds_on_int8_scores": fp32_on_int8.to_json(),
                "selection_samples": sel8.n, "search_samples": s_table.n,
                "full_accuracy_int8": sel8.full_accuracy,
                "certificate": None if f8.certificate is None else f8.certificate.to_json(),
                "agreement_with_fp32": {"exit": float(same_exit.mean()),
                                        "exit_and_prediction": float(same.mean())},
                "messages": list(f8.messages)}
    return hook


INT8_THRESHOLDS = ("own", "fp32")


def int8_thresholds_for(fitted: FittedExits, mode: str, train: ImageSplit | None,
                        calib: ImageSplit | None = None
                        ) -> tuple[Callable[[Run, list[int]], dict[str, Any]] | None, str]:
    """(the hook for `pipeline.export(int8_thresholds=...)` or None, the record's label).

    `mode` "own": thresholds chosen on the int8 chain's own scores, on the same splits
    fp32 calibration used — the hold-out of `train` (the split `fit_exits` got; its
    `calib_fraction` and `seed`) and `calib` (the `calib_data` given to `fit_exits`, else
    the hold-out). Both are checked against `fitted.source` (sha256), so thresholds are
    never chosen on other data than fp32's. "fp32": the fp32 thresholds are copied. With
    no exit kept there is nothing to calibrate (None, "fp32")."""
    if mode not in INT8_THRESHOLDS:
        raise ConfigError(f"int8_thresholds must be one of {INT8_THRESHOLDS}, got {mode!r}")
    exits = [i for i, h in enumerate(fitted.heads) if h is not None and h.enabled]
    if mode == "fp32" or not exits or fitted.chosen is None:
        return None, "fp32"
    cfg = fitted.config or FitConfig()
    if train is None or not hasattr(train, "subset"):
        raise ConfigError("int8 thresholds on the int8 files' own scores need the training split "
                          "fit_exits used (train=...); or pass int8_thresholds='fp32'")
    _, hold = split_indices(len(train), cfg.calib_fraction, cfg.seed)
    search = train.subset(hold)
    src = fitted.source or {}
    if src.get("kind") == "calib-data" and calib is None:
        raise ConfigError("the thresholds were chosen on calib_data; pass the same calib_data "
                          "for the int8 files' own thresholds (or int8_thresholds='fp32')")
    selection = calib if src.get("kind") == "calib-data" else search
    if src.get("sha256") and data_sha256(selection) != src["sha256"]:
        raise ConfigError(f"the data given for the int8 thresholds is not the {src['kind']} "
                          "the fp32 thresholds were chosen on (sha256 differs); pass the same "
                          "train (and calib_data) as to fit")
    return threshold_hook(fitted, cfg, search, calib, exits), "own"
