"""`edge-ee demo`: the whole flow on Fashion-MNIST in a few minutes on 2 CPU cores.

shipped CNN (or one trained now) → E2CM exits after every conv block → thresholds on a
calibration split of train (accuracy drop ≤ 1 point) → validated ONNX bundle → the
torch-free runner on test images, beside the full network as one graph → report.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from device_runners import cli as run_cli
from device_runners.manifest import load_bundle
from device_runners.results import load_results
from edge_ee.cost import measure_call_overhead_flops
from edge_ee.data import atomic_save_npz, load_fashion_mnist
from edge_ee.exitnet import from_sequential
from edge_ee.exits import ExitSpec
from edge_ee.models.small_cnn import asset_path, load_small_cnn
from edge_ee.models.weights import sha256_file
from edge_ee.pipeline import (
    FitConfig,
    calibration_record,
    choose_thresholds,
    evaluate_split,
    export,
    fit_exits,
)
from edge_ee.report import summarize, write_report


@dataclass(frozen=True)
class DemoConfig:
    data: str | None = None
    out: str = "edge-ee-demo"
    train_epochs: int = 0  # 0 = use the shipped weights
    samples: int = 1000
    threads: int = 1
    latency_aware: bool = True  # charge each kept exit its measured runtime-call overhead
    fit: FitConfig = field(default_factory=lambda: FitConfig(exit_spec=ExitSpec("e2cm")))


def _step(i: int, text: str) -> None:
    print(f"[{i}/6] {text}", file=sys.stderr, flush=True)


def run_demo(cfg: DemoConfig) -> Path:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    _step(1, "loading Fashion-MNIST")
    train, test = load_fashion_mnist("train", cfg.data), load_fashion_mnist("test", cfg.data)
    if cfg.train_epochs > 0:
        from edge_ee.train_cnn import accuracy, train_small_cnn
        _step(2, f"training the small CNN for {cfg.train_epochs} epoch(s)")
        model = train_small_cnn(train, cfg.train_epochs)
        print(f"      test accuracy {accuracy(model, test):.4f}", file=sys.stderr)
        source = None
    else:
        _step(2, f"loading the shipped CNN ({asset_path().name}, sha256 checked)")
        model = load_small_cnn()
        source = sha256_file(asset_path())
    net = from_sequential(model, [0, 1, 2, 3, 4], (1, 28, 28), name="fashion-cnn")
    _step(3, f"fitting {cfg.fit.exit_spec.label} exits after {net.num_exits} blocks "
             "(one statistics pass)")
    fitted = fit_exits(net, train, cfg.fit, choose=False)
    _step(4, "exporting the full network, then latency-aware thresholds, then the "
             "exit-split bundle (each validated against torch)")
    full = export(net, fitted.heads, out / "full", test, "fashion-cnn-full", None, source,
                  monolithic=True, overwrite=True)
    fit_cfg = fitted.config or cfg.fit  # --latency-aware: boundary costs measured in fit_exits
    if cfg.latency_aware and not cfg.fit.latency_aware:
        overhead = measure_call_overhead_flops(str(full / "seg0.onnx"), fitted.costs.full_flops)
        fit_cfg = replace(cfg.fit, exit_overhead_flops=overhead)
        print(f"      one extra runtime call costs as much as {overhead / 1e6:.2f} MFLOPs here "
              f"({overhead / fitted.costs.full_flops:.1%} of the network); thresholds pay it "
              "per kept exit", file=sys.stderr)
    choose_thresholds(fitted, fit_cfg, progress=True)
    test_table = evaluate_split(net, fitted.heads, test, fitted.costs)
    on_test = test_table.evaluate(np.asarray(fitted.chosen.thresholds))
    print(f"      calibration: cost {fitted.chosen.cost_fraction:.3f} of full, accuracy "
          f"{fitted.chosen.accuracy:.4f}; test: cost {on_test.cost_fraction:.3f}, accuracy "
          f"{on_test.accuracy:.4f} (full network {test_table.full_accuracy:.4f})",
          file=sys.stderr)
    calib = calibration_record(fitted, fit_cfg, test_table)
    bundle = export(net, fitted.heads, out / "bundle", test, "fashion-cnn-e2cm", calib, source,
                    overwrite=True)
    n = min(cfg.samples, len(test))
    atomic_save_npz(out / "test_samples.npz", x=test.images[:n], y=test.labels[:n])
    _step(5, f"running edge-ee-run on {n} test images (exit-split bundle, then full network)")
    for b, name in ((bundle, "early-exit"), (full, "full")):
        code = run_cli.main([str(b), "--input", str(out / "test_samples.npz"),
                             "--out", str(out / f"results-{name}.json"),
                             "--threads", str(cfg.threads), "--idle-s", "1", "--quiet"])
        if code != 0:
            raise SystemExit(code)
    _step(6, "report")
    sums = [summarize(load_results(out / f"results-{nm}.json"), load_bundle(b))
            for b, nm in ((full, "full"), (bundle, "early-exit"))]
    path = write_report(sums, ["full", "early-exit"], out)
    print(path.read_text())
    print(f"done in {time.perf_counter() - t0:.0f} s; bundle at {bundle}, report at {path}",
          file=sys.stderr)
    return path


if __name__ == "__main__":  # pragma: no cover
    torch.set_num_threads(2)
    run_demo(DemoConfig())
