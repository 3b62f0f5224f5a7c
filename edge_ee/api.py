"""The public Python API: the few calls an export script on a workstation needs.

    from edge_ee import api
    model, _ = api.load_model("my_net.py:make", weights="w.pt")        # or any nn.Module
    net = api.cut(model, "auto:4", input_shape=(3, 32, 32))            # or ["layer1", ...]
    fitted = api.fit(net, train, api.FitConfig(exit_spec=api.ExitSpec.parse("lda:2")),
                     calib_data=calib)                                 # one streaming pass
    path = api.export_bundle(net, fitted, "bundle/", test, "my-net")   # validated vs torch

`train`, `calib`, `test` are `ImageSplit`s (the shipped loaders), streamed image folders
(`edge_ee.datasets.ImageFolder` with a declared `Preprocess`, recorded in the bundle), or —
for the statistics pass — any torch Dataset/DataLoader of (input, label) with a `classes`
attribute. The
calls below are the same functions the `edge-ee` CLI runs; each has its own docstring.
Trained exits (`train_exits`) and pruning (`prune`) live in `edge_ee.exits.trained` and
`edge_ee.pruning`; runnable scripts are in `examples/`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from edge_ee.calibrate import ExitTable, OperatingPoint
from edge_ee.exitnet import ExitNet, from_module
from edge_ee.exits import ExitSpec
from edge_ee.exits.trained import TrainExitsConfig, attach_exits, train_exits
from edge_ee.inspect import CutPoint, auto_cuts, cut_points
from edge_ee.int8_calibration import int8_thresholds_for
from edge_ee.models.user import load_user_model
from edge_ee.pipeline import (
    FitConfig,
    FittedExits,
    calibration_record,
    evaluate_split,
    export,
    fit_exits,
)

__all__ = ["CutPoint", "ExitNet", "ExitSpec", "ExitTable", "FitConfig", "FittedExits",
           "OperatingPoint", "TrainExitsConfig", "attach_exits", "cut", "cut_points",
           "evaluate", "export_bundle", "fit", "load_model", "train_exits"]


def load_model(spec: str, weights: str | None = None) -> tuple[nn.Module, str]:
    """A model from `file.py:factory`, `package.module:factory` or a `.pt2` program, with
    its weights checked and loaded; returns (model in eval mode, source sha256)."""
    return load_user_model(spec, weights)


def cut(model: nn.Module, cuts: str | Sequence[str], input_shape: Sequence[int],
        name: str = "model") -> ExitNet:
    """Cut `model` at the named submodules (single-tensor boundaries), or at N points evenly
    spaced by FLOPs with `cuts="auto:N"`. Every cut becomes an exit point."""
    if isinstance(cuts, str):
        kind, _, count = cuts.partition(":")
        if kind != "auto":
            cuts = [c.strip() for c in cuts.split(",") if c.strip()]
        else:
            cuts = auto_cuts(cut_points(model, input_shape), int(count or 4))
    return from_module(model, list(cuts), input_shape, name)


def fit(net: ExitNet, train: Any, config: FitConfig | None = None, calib_data: Any = None,
        progress: bool = True) -> FittedExits:
    """Training-free exits (E2CM / LDA, one statistics pass) and thresholds: chosen on
    `calib_data` when given (certified with `config.delta`), else on a hold-out of `train`."""
    return fit_exits(net, train, config or FitConfig(), progress, calib_data=calib_data)


def evaluate(net: ExitNet, fitted: FittedExits, data: Any, batch_size: int = 256) -> OperatingPoint:
    """Accuracy, cost fraction and exit histogram of the chosen thresholds on `data`."""
    import numpy as np
    table = evaluate_split(net, fitted.heads, data, fitted.costs, batch_size, progress=False)
    return table.evaluate(np.asarray(fitted.chosen.thresholds))


def export_bundle(net: ExitNet, fitted: FittedExits, out: str | Path, data: Any, name: str,
                  test: ExitTable | None = None, *, train: Any = None, calib_data: Any = None,
                  int8_thresholds: str = "own", **options: Any) -> Path:
    """Write the exit-split bundle, validated against torch on real samples of `data`;
    `options` are `pipeline.export`'s (formats, int8, calibration_data, overwrite, ingraph, ...).

    With `int8=True` the int8 files' thresholds are chosen as `edge-ee build --int8` does
    (`edge_ee.int8_calibration.int8_thresholds_for`): on their own scores ("own", the
    default; needs `train`, the split given to `fit` — default `calibration_data` — and the
    same `calib_data` when `fit` had one) or copied from fp32 ("fp32")."""
    calib = None
    if fitted.chosen is not None:
        table = test or evaluate_split(net, fitted.heads, data, fitted.costs, progress=False)
        calib = calibration_record(fitted, fitted.config or FitConfig(), table)
    hook = None
    if options.get("int8"):
        hook, label = int8_thresholds_for(fitted, int8_thresholds,
                                          train if train is not None else
                                          options.get("calibration_data"), calib_data)
        if calib is not None:
            calib["int8_thresholds"] = label
    return export(net, fitted.heads, out, data, name, calib, int8_thresholds=hook, **options)
