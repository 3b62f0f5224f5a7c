"""`edge-ee build`: a model + its data → training-free exits → calibrated, validated bundle."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edge_ee.data import ImageSplit, load_cifar10_jpeg, load_fashion_mnist
from edge_ee.errors import ModelError
from edge_ee.exitnet import ExitNet, from_resnet_cifar, from_sequential
from edge_ee.models.resnet_cifar import load_resnet_cifar
from edge_ee.models.small_cnn import asset_path, load_small_cnn
from edge_ee.models.weights import sha256_file
from edge_ee.pipeline import FitConfig, calibration_record, evaluate_split, export, fit_exits


def load_model(model: str, data: str | None) -> tuple[ExitNet, ImageSplit, ImageSplit, str]:
    """(ExitNet, train, test, source sha256) for a named/pathed model."""
    if model == "fashion-cnn":
        net = from_sequential(load_small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28), "fashion-cnn")
        return (net, load_fashion_mnist("train", data), load_fashion_mnist("test", data),
                sha256_file(asset_path()))
    if model == "fashion-resnet":
        from edge_ee.models import fashion_resnet as fr
        net = from_sequential(fr.load_fashion_resnet(), list(fr.CUTS), (1, 28, 28), model)
        return (net, load_fashion_mnist("train", data), load_fashion_mnist("test", data),
                sha256_file(fr.asset_path()))
    p = Path(model)
    if p.suffix == ".npz":
        net = from_resnet_cifar(load_resnet_cifar(p))
        return (net, load_cifar10_jpeg("train", data), load_cifar10_jpeg("test", data),
                sha256_file(p))
    raise ModelError(f"unknown model {model!r}; pass 'fashion-cnn', 'fashion-resnet' or a "
                     "CIFAR ResNet .npz")


def build_bundle(model: str, data: str | None, out: str, cfg: FitConfig,
                 overwrite: bool = False, monolithic: bool = False,
                 formats: tuple[str, ...] = ("onnx",), int8: bool = False) -> Path:
    net, train, test, source = load_model(model, data)
    fmt = {"formats": formats, "int8": int8, "calibration_data": train}
    if monolithic:
        path = export(net, [None] * net.num_exits, out, test, f"{net.name}-full", None, source,
                      monolithic=True, overwrite=overwrite, **fmt)
        print(f"wrote {path}", file=sys.stderr)
        return path
    fitted = fit_exits(net, train, cfg)
    table = evaluate_split(net, fitted.heads, test, fitted.costs, cfg.batch_size)
    on_test = table.evaluate(np.asarray(fitted.chosen.thresholds))
    print(f"calibration: cost {fitted.chosen.cost_fraction:.3f}, accuracy "
          f"{fitted.chosen.accuracy:.4f}; test: cost {on_test.cost_fraction:.3f}, accuracy "
          f"{on_test.accuracy:.4f} (full {table.full_accuracy:.4f})", file=sys.stderr)
    calib = calibration_record(fitted, cfg, table)
    path = export(net, fitted.heads, out, test, f"{net.name}-{cfg.exit_spec.label}", calib,
                  source, overwrite=overwrite, **fmt)
    print(f"wrote {path}", file=sys.stderr)
    return path
