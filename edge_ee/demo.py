"""`edge-ee demo`: the whole flow on Fashion-MNIST in a few minutes on 2 CPU cores.

shipped network (the ~100 MFLOPs `fashion-resnet`, or the 11 MFLOPs `fashion-cnn`, or
one trained now) → training-free exits at every exit point (default `lda:2`: the
shared-covariance class-mean exit on 2×2-pooled features, one statistics pass like
E2CM; `--exit e2cm` is the thesis' E2CM), fitted on a class-balanced sample of the
training split → each exit's segment-boundary cost measured on this machine
(`edge_ee.boundary`) and charged in the threshold search, so only exits that pay for
themselves in time are kept (accuracy drop ≤ 1 point on the calibration part), and at most
5 % of the network in charged exit costs (the default `--max-overhead auto`), so an image
that takes no exit costs ≤ 1.05 × the full network →
validated ONNX bundle → the torch-free runner on a class-balanced sample of the test
split, beside the full network as one graph → report, ending with what was saved:
latency (p50 and mean), energy per inference (labelled estimated where it is) and FLOPs.

The 11 MFLOPs CNN is too small to show a saving: a boundary costs ~50–150 µs in
onnxruntime here, a third of that network's time; `fashion-resnet` is sized so it pays.
Why `lda:2` by default: on fashion-resnet with the measured boundary costs charged, E2CM
(raw or pooled) keeps one exit that 30 % of the test images take (FLOPs 0.77, p50 no
faster), `lda:2` keeps two that 96 % take (FLOPs 0.33, accuracy within 0.1 point).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from device_runners.manifest import load_bundle
from device_runners.results import load_results
from edge_ee.data import ImageSplit, atomic_save_npz, balanced_indices, load_fashion_mnist
from edge_ee.errors import ConfigError
from edge_ee.exitnet import ExitNet, from_sequential
from edge_ee.exits import ExitSpec
from edge_ee.models.weights import sha256_file
from edge_ee.pipeline import (
    FitConfig,
    FittedExits,
    calibration_record,
    evaluate_split,
    export,
    fit_exits,
)
from edge_ee.report import summarize, write_report

MODELS = ("fashion-resnet", "fashion-cnn")


@dataclass(frozen=True)
class DemoConfig:
    data: str | None = None
    out: str = "edge-ee-demo"
    model: str = "fashion-resnet"  # or fashion-cnn (the 11 MFLOPs CNN: too small to save time)
    train_epochs: int = 0  # 0 = use the shipped weights
    fit_samples: int = 12000  # class-balanced training images for statistics + calibration
    samples: int = 2000  # class-balanced test images: test accuracy and the runner
    threads: int = 1
    latency_aware: bool = True  # charge each kept exit its measured boundary cost
    fit: FitConfig = field(default_factory=lambda: FitConfig(exit_spec=ExitSpec("lda", pool=2),
                                                             calib_fraction=0.25))

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"demo model {self.model!r} unknown; choose from {MODELS}")
        if self.fit_samples < 200 or self.samples < 10:
            raise ConfigError("--fit-samples must be ≥ 200 and --samples ≥ 10")


def _step(i: int, text: str) -> None:
    print(f"[{i}/6] {text}", file=sys.stderr, flush=True)


def _network(cfg: DemoConfig, train) -> tuple[ExitNet, str | None]:
    """The ExitNet and the sha256 of the shipped weights (None when trained now)."""
    if cfg.model == "fashion-resnet":
        from edge_ee.models.fashion_resnet import CUTS, asset_path, load_fashion_resnet
        cuts, loader, arch = list(CUTS), load_fashion_resnet, "fashion-resnet"
    else:
        from edge_ee.models.small_cnn import asset_path, load_small_cnn
        cuts, loader, arch = [0, 1, 2, 3, 4], load_small_cnn, "small-cnn"
    if cfg.train_epochs > 0:
        from edge_ee.train_cnn import train_small_cnn
        _step(2, f"training {cfg.model} for {cfg.train_epochs} epoch(s)")
        model, source = train_small_cnn(train, cfg.train_epochs, arch=arch), None
    else:
        _step(2, f"loading the shipped {cfg.model} ({asset_path().name}, sha256 checked)")
        model, source = loader(), sha256_file(asset_path())
    return from_sequential(model, cuts, (1, 28, 28), name=cfg.model), source


def saving_lines(full: dict, ee: dict) -> list[str]:
    """What early exit saved, from the two run summaries: latency, energy, FLOPs."""
    lines = []
    lf, le = full.get("latency_ns") or {}, ee.get("latency_ns") or {}
    for key in ("p50", "mean"):
        if lf.get(key) and le.get(key):
            lines.append(f"latency {key}: {le[key] / 1e6:.3f} ms vs {lf[key] / 1e6:.3f} ms full "
                         f"= {le[key] / lf[key]:.2f}× ({1 - le[key] / lf[key]:+.0%} saved)")
    ef, ee_en = full.get("energy") or {}, ee.get("energy") or {}
    a, b = ef.get("energy_per_inference_mj"), ee_en.get("energy_per_inference_mj")
    if a and b:
        label = "estimated" if ef.get("is_estimate") or ee_en.get("is_estimate") else "measured"
        src = ee_en.get("source")
        label += "" if src in (None, label) else f", {src}"
        lines.append(f"energy per inference ({label}): {b:.4f} mJ vs "
                     f"{a:.4f} mJ full = {b / a:.2f}× ({1 - b / a:+.0%} saved)")
    else:
        lines.append("energy per inference: not available (no power source, or the run was "
                     "shorter than the sensor needs)")
    lines.append(f"FLOPs: {ee['cost_fraction']:.2f} of the full network; accuracy "
                 f"{ee['accuracy']:.4f} vs {full['accuracy']:.4f} full")
    return lines


@dataclass
class DemoBuild:
    """What steps 1–4 of the demo made: the network, its fitted exits and both bundles."""

    net: ExitNet
    fitted: FittedExits
    full: Path
    bundle: Path
    sample: ImageSplit  # the class-balanced test sample
    train: ImageSplit
    test: ImageSplit


def build_demo(cfg: DemoConfig) -> DemoBuild:
    """Steps 1–4: data, network, exits with host-measured boundary costs, two bundles."""
    out = Path(cfg.out)
    _step(1, "loading Fashion-MNIST")
    train, test = load_fashion_mnist("train", cfg.data), load_fashion_mnist("test", cfg.data)
    net, source = _network(cfg, train)
    fit_cfg = replace(cfg.fit, latency_aware=cfg.latency_aware or cfg.fit.latency_aware)
    fit_train = train.subset(balanced_indices(train.labels, cfg.fit_samples, cfg.fit.seed))
    _step(3, f"fitting {fit_cfg.exit_spec.label} exits at {net.num_exits} exit points on "
             f"{len(fit_train)} class-balanced training images (one statistics pass)"
             + ("; measuring each boundary's cost here" if fit_cfg.latency_aware else ""))
    fitted = fit_exits(net, fit_train, fit_cfg)
    if fitted.exit_overhead:
        fr = [f for f, h in zip(fitted.exit_overhead["fraction"], fitted.heads, strict=True)
              if h is not None]
        print(f"      full network {fitted.exit_overhead['full_latency_ns'] / 1e3:.0f} µs here; "
              "a boundary costs " + " / ".join(f"{f:.0%}" for f in fr) + " of it (per exit "
              "point, host-measured); thresholds charge it per kept exit", file=sys.stderr)
    sample = test.subset(balanced_indices(test.labels, cfg.samples, cfg.fit.seed))
    table = evaluate_split(net, fitted.heads, sample, fitted.costs)
    on_test = table.evaluate(np.asarray(fitted.chosen.thresholds))
    kept = [i for i, h in enumerate(fitted.heads) if h is not None and h.enabled]
    ob = fitted.overhead or {}
    if ob.get("max_overhead") is not None:
        print(f"      worst case (no exit taken): the kept exits are charged "
              f"{ob['charged']:.0%} of the full network, bound {ob['max_overhead']:.0%} "
              "(--max-overhead)", file=sys.stderr)
    print(f"      kept exits {kept}; calibration: cost {fitted.chosen.cost_fraction:.3f} of full,"
          f" accuracy {fitted.chosen.accuracy:.4f}; test: cost {on_test.cost_fraction:.3f}, "
          f"accuracy {on_test.accuracy:.4f} (full network {table.full_accuracy:.4f})",
          file=sys.stderr)
    _step(4, "exporting the full network and the exit-split bundle (each validated against torch)")
    full = export(net, fitted.heads, out / "full", test, f"{cfg.model}-full", None, source,
                  monolithic=True, overwrite=True)
    bundle = export(net, fitted.heads, out / "bundle", test, f"{cfg.model}-{fit_cfg.exit_spec.label}",
                    calibration_record(fitted, fit_cfg, table), source, overwrite=True)
    return DemoBuild(net, fitted, full, bundle, sample, train, test)


def run_bundles(build: DemoBuild, out: Path, threads: int = 1) -> list[dict]:
    """Step 5: `edge-ee-run` on the sample, full network then early exit; their summaries."""
    atomic_save_npz(out / "test_samples.npz", x=build.sample.images, y=build.sample.labels)
    for b, name in ((build.full, "full"), (build.bundle, "early-exit")):
        # its own process, as on a device: results' peak RSS is the runner's, not torch's
        code = subprocess.run([sys.executable, "-m", "device_runners.cli", str(b),
                               "--input", str(out / "test_samples.npz"),
                               "--out", str(out / f"results-{name}.json"),
                               "--threads", str(threads), "--idle-s", "1",
                               "--min-duration-s", "2", "--quiet"]).returncode
        if code != 0:
            raise SystemExit(code)
    return [summarize(load_results(out / f"results-{nm}.json"), load_bundle(b))
            for b, nm in ((build.full, "full"), (build.bundle, "early-exit"))]


def run_demo(cfg: DemoConfig) -> Path:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    build = build_demo(cfg)
    _step(5, f"running edge-ee-run on {len(build.sample)} class-balanced test images (full "
             "network, then the exit-split bundle)")
    sums = run_bundles(build, out, cfg.threads)
    _step(6, "report")
    path = write_report(sums, ["full", "early-exit"], out)
    print(path.read_text())
    print("## What early exit saved (one run each, this machine)\n")
    for line in saving_lines(sums[0], sums[1]):
        print(f"- {line}")
    print(f"done in {time.perf_counter() - t0:.0f} s; bundle at {build.bundle}, report at {path}",
          file=sys.stderr)
    return path


if __name__ == "__main__":  # pragma: no cover
    torch.set_num_threads(2)
    run_demo(DemoConfig())
