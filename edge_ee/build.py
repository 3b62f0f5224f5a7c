"""`edge-ee build`: a model + its data → training-free exits → calibrated, validated bundle."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from converters.atomic import check_replaceable
from edge_ee.calib_source import (
    balanced_subset,
    check_classes,
    check_disjoint,
    read_calib_npz,
    source_record,
    without,
)
from edge_ee.certify import Certificate, samples_needed
from edge_ee.data import ImageSplit, load_cifar10_jpeg, load_fashion_mnist
from edge_ee.datasets import ImageFolder
from edge_ee.errors import ConfigError, ModelError
from edge_ee.exitnet import ExitNet, from_resnet_cifar, from_sequential
from edge_ee.int8_calibration import int8_thresholds_for
from edge_ee.models.resnet_cifar import load_resnet_cifar
from edge_ee.models.small_cnn import asset_path, load_small_cnn
from edge_ee.models.weights import sha256_file
from edge_ee.pipeline import FitConfig, calibration_record, evaluate_split, export, fit_exits

log = logging.getLogger(__name__)

Loader = Callable[[str, "str | None"], ImageSplit]


@dataclass(frozen=True)
class UserModel:
    """`edge-ee build --model file.py:factory | package.module:factory | program.pt2` options
    (CLI flags map 1:1): weights, where to cut, the input shape (default: from the data)
    and the normalisation (default: the data's own, e.g. an .npz's mean/std)."""

    weights: str | None = None
    cut: str = "auto:4"
    input_shape: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: int | None = None  # image folders: shorter side in pixels, before the crop
    crop: tuple[int, int] | None = None  # image folders: centre crop (H, W)


def is_user_model(model: str) -> bool:
    return ":" in model or model.endswith(".pt2")


def _user_model(model: str, data: str | None, user: UserModel
                ) -> tuple[ExitNet, Any, Any, str]:
    from edge_ee.api import cut
    from edge_ee.models.user import load_user_model
    from edge_ee.user_data import check_model_classes, load_user_data
    train, test, shape = load_user_data(data, user)
    module, source = load_user_model(model, user.weights)
    name = Path(model.rpartition(":")[0] or model).stem
    net = cut(module, user.cut, shape, name)
    check_model_classes(net, shape, train)
    return net, train, test, source


def _loader(model: str) -> Loader:
    if model in ("fashion-cnn", "fashion-resnet"):
        return load_fashion_mnist
    if Path(model).suffix == ".npz":
        return load_cifar10_jpeg
    raise ModelError(f"unknown model {model!r}; pass 'fashion-cnn', 'fashion-resnet' or a "
                     "CIFAR ResNet .npz")


def load_model(model: str, data: str | None, user: UserModel | None = None
               ) -> tuple[ExitNet, ImageSplit, ImageSplit, str]:
    """(ExitNet, train, test, source sha256) for a named/pathed model, or a model of your own
    (`file.py:factory`, `package.module:factory`, `.pt2`) cut as `user` says."""
    if is_user_model(model):
        return _user_model(model, data, user or UserModel())
    load = _loader(model)
    if model == "fashion-cnn":
        net = from_sequential(load_small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28), "fashion-cnn")
        return net, load("train", data), load("test", data), sha256_file(asset_path())
    if model == "fashion-resnet":
        from edge_ee.models import fashion_resnet as fr
        net = from_sequential(fr.load_fashion_resnet(), list(fr.CUTS), (1, 28, 28), model)
        return net, load("train", data), load("test", data), sha256_file(fr.asset_path())
    p = Path(model)
    return (from_resnet_cifar(load_resnet_cifar(p)), load("train", data), load("test", data),
            sha256_file(p))


def load_calib_data(spec: str, model: str, train: ImageSplit, test: ImageSplit) -> ImageSplit:
    """`--calib-data`: an .npz (x, y[, classes]), 'test' (the model's test split), or a dataset
    of the model's kind (Fashion-MNIST folder / CIFAR-10 JPEG zip), whose test split is used."""
    if spec == "test":
        return test
    if spec == "train":
        raise ConfigError("--calib-data train is the statistics data itself; a certificate needs "
                          "samples the backbone was not trained on (e.g. --calib-data test)")
    if spec.endswith(".npz"):
        return read_calib_npz(spec, train)
    if isinstance(train, ImageFolder) and Path(spec).is_dir():  # a folder of class folders
        calib = ImageFolder(spec, train.preprocess, train.classes, train.image_hw)
        calib.check_headers()
        return calib
    if is_user_model(model):  # a dataset file: its test split, in the model's normalisation
        from dataclasses import replace
        split = (load_cifar10_jpeg if spec.endswith(".zip") else load_fashion_mnist)("test", spec)
        return replace(split, mean=train.mean, std=train.std)
    return _loader(model)("test", spec)


def prepare_calibration(cfg: FitConfig, model: str, train: ImageSplit, test: ImageSplit
                        ) -> tuple[ImageSplit | None, ImageSplit, int]:
    """(calibration set or None, the test split minus it, samples removed from test).

    Every check runs here, before any pass over the data: classes, overlap with the
    statistics data (by per-sample hash)."""
    if cfg.calib_data is None:
        if cfg.calib_samples is not None:
            raise ConfigError("--calib-samples needs --calib-data")
        return None, test, 0
    calib = load_calib_data(cfg.calib_data, model, train, test)
    check_classes(calib, len(train.classes))
    if cfg.calib_samples is not None:
        calib, _ = balanced_subset(calib, cfg.calib_samples, cfg.seed)
    check_disjoint(calib, train)
    rest, removed = without(test, calib)
    if len(rest) == 0:
        raise ConfigError("--calib-data covers the whole test split, leaving nothing to "
                          "evaluate on; take a part of it with --calib-samples N")
    return calib, rest, removed


def build_bundle(model: str, data: str | None, out: str, cfg: FitConfig,
                 overwrite: bool = False, monolithic: bool = False,
                 formats: tuple[str, ...] = ("onnx",), int8: bool = False,
                 user: UserModel | None = None, candidates: bool = False,
                 int8_thresholds: str = "own",
                 strategies: tuple[str, ...] = ("split", "ingraph")) -> Path:
    check_replaceable(out, overwrite)  # before any pass over data: --out, --overwrite
    if cfg.overheads is not None:  # a corrupt or foreign file fails now; its exits after fitting
        from edge_ee.overheads import read_overheads
        read_overheads(cfg.overheads)
    net, train, test, source = load_model(model, data, user)
    if ("onnx" not in formats or "ingraph" not in strategies) and cfg.strategy != "split":
        # no in-graph file in this bundle: the split runs, so the split is charged
        if cfg.strategy == "ingraph":
            raise ConfigError("--charge-strategy ingraph needs the in-graph file: an ONNX bundle "
                              "(add onnx to --formats) with --strategies split,ingraph; or "
                              "--charge-strategy split")
        cfg = replace(cfg, strategy="split")
    fmt = {"formats": formats, "int8": int8, "calibration_data": train,
           "ingraph": "ingraph" in strategies}
    if monolithic:
        path = export(net, [None] * net.num_exits, out, test, f"{net.name}-full", None, source,
                      monolithic=True, overwrite=overwrite, **fmt)
        print(f"wrote {path}", file=sys.stderr)
        return path
    calib, test_eval, removed = prepare_calibration(cfg, model, train, test)
    if removed:
        print(f"test split: {removed} samples used for calibration are left out of the test "
              f"evaluation ({len(test_eval)} remain)", file=sys.stderr)
    if cfg.delta is not None:
        early = _too_small(cfg, net, train, calib, test, out, source, overwrite, fmt)
        if early is not None:
            return early
    fitted = fit_exits(net, train, cfg, calib_data=calib)  # its warnings are logged
    table = evaluate_split(net, fitted.heads, test_eval, fitted.costs, cfg.batch_size)
    on_test = table.evaluate(np.asarray(fitted.chosen.thresholds))
    print(f"calibration: cost {fitted.chosen.cost_fraction:.3f}, accuracy "
          f"{fitted.chosen.accuracy:.4f}; test: cost {on_test.cost_fraction:.3f}, accuracy "
          f"{on_test.accuracy:.4f} (full {table.full_accuracy:.4f})", file=sys.stderr)
    if fitted.certificate is not None and fitted.certificate.certified:
        c = fitted.certificate
        print(f"certified: drop ≤ {c.epsilon} with probability ≥ {1 - c.delta:.3g} ({c.bound}, "
              f"n = {c.n}; calibration risk {c.empirical_risk:.4f}, upper bound "
              f"{c.risk_upper_bound:.4f}); measured test drop "
              f"{table.full_accuracy - on_test.accuracy:.4f}", file=sys.stderr)
    calib_rec = calibration_record(fitted, cfg, table)
    calib_rec["test_split"] = {"n": len(test_eval), "calibration_samples_left_out": removed}
    hook, label = int8_thresholds_for(fitted, int8_thresholds, train, calib) if int8 \
        else (None, None)
    calib_rec["int8_thresholds"] = label
    path = export(net, fitted.heads, out, test, f"{net.name}-{cfg.exit_spec.label}", calib_rec,
                  source, overwrite=overwrite, candidates=candidates, int8_thresholds=hook,
                  **fmt)
    if hook is not None:
        _print_int8(path)
    print(f"wrote {path}", file=sys.stderr)
    return path


def _print_int8(path: Path) -> None:
    import json
    q = json.loads((path / "manifest.json").read_text()).get("quantization") or {}
    for fmt, rec in (q.get("formats") or {}).items():
        t = rec.get("thresholds") or {}
        if "point" in t:
            p, a = t["point"], t["agreement_with_fp32"]
            print(f"{fmt}: thresholds on its own scores: calibration cost {p['cost_fraction']:.3f}"
                  f", accuracy {p['accuracy']:.4f} (fp32 thresholds on int8 scores: cost "
                  f"{t['fp32_thresholds_on_int8_scores']['cost_fraction']:.3f}, accuracy "
                  f"{t['fp32_thresholds_on_int8_scores']['accuracy']:.4f}); same exit as fp32 "
                  f"on {a['exit']:.1%}", file=sys.stderr)


def _too_small(cfg: FitConfig, net: ExitNet, train: ImageSplit, calib: ImageSplit | None,
               test: ImageSplit, out: str, source: str, overwrite: bool, fmt: dict
               ) -> Path | None:
    """Before any pass: when the calibration sample cannot certify any saving, say how many
    samples are needed and export the full network (unless --allow-uncertified)."""
    from edge_ee.calib_source import TRAIN_HOLDOUT_WARNING
    from edge_ee.data import split_indices
    if calib is None:
        _, hold = split_indices(len(train), cfg.calib_fraction, cfg.seed)
        calib_set, kind, warn = train.subset(hold), "train-holdout", TRAIN_HOLDOUT_WARNING
        log.warning(TRAIN_HOLDOUT_WARNING)
    else:
        calib_set, kind, warn = calib, "calib-data", None
    need = samples_needed(cfg.max_drop, cfg.delta, cfg.bound)
    n = len(calib_set)
    if need is None or n >= need:
        return None
    msg = (f"the calibration sample ({n}) is too small to certify any saving at drop ≤ "
           f"{cfg.max_drop} with probability ≥ {1 - cfg.delta:.3g} ({cfg.bound}): at least "
           f"{need} samples are needed (even with no errors at all)")
    if cfg.allow_uncertified:
        print(f"warning: {msg}; continuing uncertified (--allow-uncertified)", file=sys.stderr)
        return None
    print(f"warning: {msg}; exporting the full network (all exits off) — pass more "
          "--calib-data, or --allow-uncertified for an uncertified bundle", file=sys.stderr)
    cert = Certificate(cfg.max_drop, cfg.delta, cfg.bound, n, False, 0, None, None, None, need)
    rec = {"split": "none (nothing certifiable)", "source": source_record(kind, calib_set, warn),
           "guarantee": "not certified: full network exported (all exits off); " + msg,
           "certificate": cert.to_json(), "risk_curve": [], "max_drop": cfg.max_drop,
           "point": None}
    path = export(net, [None] * net.num_exits, out, test, f"{net.name}-full", rec, source,
                  overwrite=overwrite, **fmt)
    print(f"wrote {path}", file=sys.stderr)
    return path
