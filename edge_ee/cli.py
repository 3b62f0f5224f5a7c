"""`edge-ee`: the host command line. Each subcommand's flags map 1:1 to a config field.

  edge-ee demo       the whole flow on Fashion-MNIST (quick start)
  edge-ee build      training-free exits on a model → calibrated, validated bundle
  edge-ee report     statistics of one or more edge-ee-run results
  edge-ee train-cnn  retrain the small Fashion-MNIST CNN

Exit codes: 0 success, 2 bad input (a typed EdgeEEError; the message says the fix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from device_runners.argtypes import DefaultsHelpFormatter
from edge_ee import cli_types as ct
from edge_ee.errors import EdgeEEError
from edge_ee.log import configure_logging


def _fit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exit", dest="exit_spec", default="e2cm", type=ct.exit_spec,
                   help="exit kind[:pool][:confidence], e.g. e2cm, e2cm:2:margin, lda:2 "
                        "(kinds e2cm|lda; confidence max_softmax|margin|temperature)")
    p.add_argument("--exit-at", action="append", default=[], metavar="IDX=SPEC", type=ct.exit_at,
                   help="a different exit kind at one exit point, e.g. --exit-at 0=e2cm:2:margin "
                        "(repeatable)")
    p.add_argument("--exits", default=None, type=ct.exits,
                   help="comma-separated exit point indices that get a head (default: all)")
    p.add_argument("--normaliser", choices=("mean", "rms"), default="mean",
                   help="distance normaliser ν_k of E2CM exits: mean (the paper: mean distance "
                        "on the calibration part) or rms (closed form from the statistics pass)")
    p.add_argument("--shrinkage", type=ct.number(0, 1), default=0.01,
                   help="lda exits: shrinkage of the shared covariance toward its diagonal")
    p.add_argument("--calib-fraction", type=ct.number(0, 1, lo_open=True), default=0.1,
                   help="fraction of the training data held out to calibrate thresholds")
    p.add_argument("--search", choices=("greedy", "random"), default="greedy",
                   help="threshold search: greedy (budgeted) or random (the paper's random "
                        "vectors + convex hull)")
    p.add_argument("--random-vectors", type=ct.integer(1, 10**7), default=100,
                   help="--search random: how many random threshold vectors")
    p.add_argument("--max-drop", type=ct.number(0, 1), default=0.01,
                   help="largest accuracy drop allowed (0.01 = 1 point): on the calibration "
                        "sample, or, with --delta, certified for new data")
    p.add_argument("--delta", type=float, default=None,  # range: FitConfig (check_levels)
                   help="certify --max-drop: the exported thresholds keep the expected drop "
                        "≤ --max-drop with probability ≥ 1 − delta (e.g. 0.1); nothing "
                        "certified → the full network is exported")
    p.add_argument("--bound", choices=("binomial", "hoeffding_bentkus"), default="binomial",
                   help="p-value for the certificate: exact binomial tail (default) or "
                        "Hoeffding–Bentkus (Learn then Test)")
    p.add_argument("--allow-uncertified", action="store_true",
                   help="with --delta: when nothing is certified, export the uncertified "
                        "pick instead of the full network")
    p.add_argument("--refine", type=ct.integer(0, 1000), default=8,
                   help="with --delta: threshold points inserted between steps of the path "
                        "(finer steps let the certified walk stop closer to --max-drop)")
    p.add_argument("--budget", type=ct.number(0, 1, lo_open=True), default=None,
                   help="instead of --max-drop: the most accurate thresholds within this "
                        "fraction of the full network's FLOPs")
    p.add_argument("--batch-size", type=ct.integer(1, 1 << 20), default=256,
                   help="samples per batch in the statistics and scoring passes")
    p.add_argument("--seed", type=ct.integer(0, 2**32 - 1), default=0,
                   help="random seed (calibration split, subsets, random search)")
    p.add_argument("--exit-overhead-flops", type=ct.number(0), default=0.0,
                   help="FLOPs-equivalent charged per kept exit for its extra runtime call "
                        "in the threshold search (the demo measures it; 0 = pure FLOPs)")
    p.add_argument("--latency-aware", action="store_true",
                   help="measure what each exit's segment boundary costs on this machine "
                        "(runtime call, exit head, layout reorders) and charge it in the "
                        "threshold search instead of --exit-overhead-flops")
    p.add_argument("--overheads", default=None, metavar="FILE",
                   help="charge the exit costs a device measured (edge-ee-run BUNDLE "
                        "--measure-overheads on a --candidates bundle) instead of measuring "
                        "on this machine; default: none")
    p.add_argument("--max-overhead", type=_max_overhead, default="auto",
                   help="worst-case bound: the kept exits' summed charged cost (head + "
                        "boundary) as a fraction of the full network, so an input that takes "
                        "no exit costs at most (1 + this) × the network without exits. "
                        "'auto': 0.05 with --latency-aware or --overheads, no bound with "
                        "pure FLOPs; 'none': no bound")
    p.add_argument("--charge-strategy", choices=("auto", "split", "ingraph"), default="auto",
                   help="with --latency-aware / --overheads: charge each exit what it costs in "
                        "this strategy: split segments, in-graph If, or auto (in-graph, "
                        "split when the bundle has no ONNX); edge-ee-run --strategy auto "
                        "runs the strategy charged under --max-overhead")


def _max_overhead(text: str) -> float | str | None:
    """--max-overhead: 'auto', 'none' or a finite fraction ≥ 0."""
    t = text.strip().lower()
    if t in ("auto", "none"):
        return None if t == "none" else "auto"
    return ct.number(0)(text)


def _calib_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calib-data", default=None,
                   help="labelled data the backbone was NOT trained on, to choose/certify "
                        "thresholds: an .npz (x uint8 NHWC, y labels[, classes]), 'test' (the "
                        "model's test split; those samples leave the test evaluation), or a "
                        "dataset of the model's kind (its test split). Default: a held-out "
                        "part of the training split, with a warning")
    p.add_argument("--calib-samples", type=int, default=None,
                   help="use a class-balanced random subset of this many --calib-data samples "
                        "(default: all)")


def _fit_config(a: argparse.Namespace):  # -> FitConfig (import deferred: torch)
    from dataclasses import replace

    from edge_ee.errors import ConfigError
    from edge_ee.exits import ExitSpec
    from edge_ee.pipeline import FitConfig
    spec = replace(ExitSpec.parse(a.exit_spec), normaliser=a.normaliser, shrinkage=a.shrinkage)
    exits = None if a.exits is None else tuple(int(v) for v in a.exits.split(","))
    exit_at = []
    for item in a.exit_at:
        idx, sep, text = item.partition("=")
        if not sep or not idx.strip().isdigit():
            raise ConfigError(f"--exit-at {item!r}: write IDX=SPEC, e.g. 3=lda:2:margin")
        exit_at.append((int(idx), replace(ExitSpec.parse(text), normaliser=a.normaliser,
                                          shrinkage=a.shrinkage)))
    return FitConfig(exit_spec=spec, exits=exits, exit_at=tuple(exit_at), calib_fraction=a.calib_fraction,
                     search=a.search, random_vectors=a.random_vectors, max_drop=a.max_drop,
                     budget=a.budget, batch_size=a.batch_size, seed=a.seed,
                     exit_overhead_flops=a.exit_overhead_flops, latency_aware=a.latency_aware,
                     overheads=getattr(a, "overheads", None),
                     max_overhead=a.max_overhead, strategy=a.charge_strategy,
                     delta=a.delta, bound=a.bound, allow_uncertified=a.allow_uncertified,
                     refine=a.refine,
                     calib_data=getattr(a, "calib_data", None),
                     calib_samples=getattr(a, "calib_samples", None))


def build_parser() -> argparse.ArgumentParser:
    from edge_ee import __version__
    p = argparse.ArgumentParser(prog="edge-ee", description="early-exit networks for edge devices")
    p.add_argument("--version", action="version", version=f"edge-ee {__version__}")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    loud.add_argument("-q", "--quiet", action="store_true",
                      help="only warnings and errors; no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="Fashion-MNIST end to end: exits, bundle, run, report")
    d.add_argument("--data", default=None, help="Fashion-MNIST IDX folder "
                   "(default: /usr/share/datasets/fashion-mnist or ../shared/data)")
    d.add_argument("--out", default="edge-ee-demo", help="folder for the bundles, runs and report")
    d.add_argument("--model", default="fashion-resnet", choices=("fashion-resnet", "fashion-cnn"),
                   help="shipped network: fashion-resnet (~100 MFLOPs, the default) or the "
                        "11 MFLOPs fashion-cnn (too small for exits to save time)")
    d.add_argument("--train-epochs", type=ct.integer(0, 10**4), default=0,
                   help="train the network now for N epochs instead of using the shipped weights")
    d.add_argument("--fit-samples", type=ct.integer(10), default=12000,
                   help="class-balanced training images for exit statistics and calibration")
    d.add_argument("--samples", type=ct.integer(1), default=2000,
                   help="class-balanced test images for test accuracy and the runner")
    d.add_argument("--threads", type=ct.integer(1, 1024), default=1,
                   help="intra-op threads of the runtime in edge-ee-run")
    d.add_argument("--pure-flops", action="store_true",
                   help="choose thresholds on FLOPs alone, without the measured boundary costs")
    _fit_args(d)
    # 3000 calibration images of --fit-samples; shared-covariance exits (see edge_ee/demo.py)
    d.set_defaults(calib_fraction=0.25, exit_spec="lda:2")

    b = sub.add_parser("build", help="fit training-free exits, calibrate, export a bundle")
    b.add_argument("--model", required=True,
                   help="CIFAR ResNet weights (resnetN.npz), 'fashion-cnn', 'fashion-resnet', or "
                        "your own: path/to/file.py:factory, package.module:factory, program.pt2")
    b.add_argument("--data", default=None,
                   help="CIFAR-10 JPEG zip, Fashion-MNIST IDX folder, or (your own model) an "
                        "image folder DIR with DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg "
                        "(streamed; needs --mean/--std), an .npz with x_train/y_train/x_test/"
                        "y_test uint8 NHWC [+ classes, mean, std], or file.py:factory / "
                        "package.module:factory returning a map-style Dataset for "
                        "factory('train') and factory('test') (default: none)")
    b.add_argument("--weights", default=None,
                   help="your own model: state_dict (.pt, torch.load(weights_only=True), or .npz)")
    b.add_argument("--cut", default="auto:4",
                   help="your own model: comma-separated submodule names to put exits after, "
                        "or auto:N (N points evenly spaced by FLOPs; see edge-ee inspect)")
    b.add_argument("--input-shape", type=ct.int_tuple, default=None,
                   help="your own model: input shape without the batch axis, e.g. 3,32,32 "
                        "(default: from the data)")
    b.add_argument("--mean", type=ct.float_tuple, default=None,
                   help="your own model: per-channel mean of images scaled to [0, 1]")
    b.add_argument("--std", type=ct.float_tuple, default=None,
                   help="your own model: per-channel std of images scaled to [0, 1]")
    b.add_argument("--resize", type=ct.integer(1, 1 << 16), default=None,
                   help="image folder: resize the shorter side to this many pixels first "
                        "(recorded in the bundle; default: no resize)")
    b.add_argument("--crop", type=ct.int_tuple, default=None,
                   help="image folder: centre crop H,W after --resize (recorded in the "
                        "bundle; default: no crop)")
    b.add_argument("--out", required=True, help="bundle folder to write")
    b.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    b.add_argument("--monolithic", action="store_true",
                   help="export the whole network as one graph (no exits), for comparison")
    b.add_argument("--formats", default="onnx", type=ct.formats,
                   help="comma-separated graph formats to export: onnx, tflite (default onnx)")
    b.add_argument("--int8", action="store_true",
                   help="also int8 files of each format (post-training, calibrated on 256 "
                        "training samples; exit heads stay float where int8 changes decisions)")
    b.add_argument("--int8-thresholds", choices=("own", "fp32"), default="own",
                   help="with --int8: choose the int8 files' exit thresholds on their own "
                        "scores (own, the default) or copy the fp32 thresholds (fp32)")
    b.add_argument("--strategies", default="split,ingraph", type=ct.strategies,
                   help="execution strategies the bundle carries, comma-separated: split (one "
                        "graph per segment; always) and ingraph (the exits as ONNX If in one "
                        "graph per precision, fp32 and int8; ONNX only; it repeats the "
                        "segments' weights, so an ONNX bundle about doubles in size — "
                        "--strategies split leaves it out)")
    b.add_argument("--candidates", action="store_true",
                   help="also carry every exit with a head as a candidate, so "
                        "`edge-ee-run BUNDLE --measure-overheads` can time them on the device "
                        "(then build again with --overheads FILE)")
    _fit_args(b)
    _calib_args(b)

    r = sub.add_parser("report", help="statistics of edge-ee-run results")
    r.add_argument("results", nargs="+", type=Path, help="results.json files")
    r.add_argument("--bundle", nargs="+", type=Path, required=True,
                   help="the bundle of each results file (one, or one per results file)")
    r.add_argument("--names", nargs="*", default=None,
                   help="a name per results file (default: the file names' stems)")
    r.add_argument("--out", type=Path, default=Path("report"),
                   help="folder for report.md, report.json, report.html and the figures")
    r.add_argument("--html", action=argparse.BooleanOptionalAction, default=True,
                   help="also write report.html (one self-contained page with the figures)")

    t = sub.add_parser("train-cnn", help="train the small Fashion-MNIST CNN")
    t.add_argument("--data", default=None, help="Fashion-MNIST IDX folder "
                   "(default: /usr/share/datasets/fashion-mnist or ../shared/data)")
    t.add_argument("--epochs", type=ct.integer(1, 10**4), default=4, help="training epochs")
    t.add_argument("--out", type=Path, required=True, help=".pt file to write")
    for register in _extensions():
        COMMANDS.update(register(sub))
    _show_defaults(p)
    return p


def _show_defaults(p: argparse.ArgumentParser) -> None:
    """Every parser, nested subcommands too, shows each option's default in --help."""
    if not issubclass(p.formatter_class, DefaultsHelpFormatter):
        p.formatter_class = DefaultsHelpFormatter
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _show_defaults(sub)


def _extensions() -> list:
    """Subcommand modules: each has `register(subparsers) -> {name: handler}` (no torch at import)."""
    import importlib

    mods = []
    for name in ("edge_ee.cli_training", "edge_ee.cli_device", "edge_ee.cli_seg",
                 "edge_ee.cli_models", "edge_ee.cli_sign", "edge_ee.cli_cluster",
                 "edge_ee.cli_lm", "edge_ee.cli_dataprune"):
        try:
            mods.append(importlib.import_module(name).register)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
    return mods


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(1 if args.verbose else -1 if args.quiet else 0)
    del args.verbose, args.quiet  # not fields of any subcommand's config
    try:
        return COMMANDS[args.command](args)
    except EdgeEEError as err:
        print(f"edge-ee: error: {err}", file=sys.stderr)
        return err.exit_code


def cmd_demo(a: argparse.Namespace) -> int:
    from edge_ee.demo import DemoConfig, run_demo
    run_demo(DemoConfig(data=a.data, out=a.out, model=a.model, train_epochs=a.train_epochs,
                        fit_samples=a.fit_samples, samples=a.samples, threads=a.threads,
                        fit=_fit_config(a), latency_aware=not a.pure_flops))
    return 0


def cmd_build(a: argparse.Namespace) -> int:
    from edge_ee.build import build_bundle
    formats = tuple(f.strip() for f in a.formats.split(",") if f.strip())
    from edge_ee.build import UserModel
    if a.crop is not None and len(a.crop) != 2:
        from edge_ee.errors import ConfigError
        raise ConfigError(f"--crop {a.crop}: give two numbers, H,W")
    user = UserModel(weights=a.weights, cut=a.cut, input_shape=a.input_shape, mean=a.mean,
                     std=a.std, resize=a.resize, crop=a.crop)
    build_bundle(a.model, a.data, a.out, _fit_config(a), a.overwrite, a.monolithic,
                 formats=formats, int8=a.int8, user=user, candidates=a.candidates,
                 int8_thresholds=a.int8_thresholds, strategies=a.strategies)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from device_runners.manifest import load_bundle
    from device_runners.results import load_results
    from edge_ee.errors import ConfigError
    from edge_ee.report import summarize, write_report
    bundles = a.bundle if len(a.bundle) == len(a.results) else a.bundle * len(a.results)
    if len(bundles) != len(a.results):
        raise ConfigError("give one --bundle, or one per results file")
    names = a.names or [p.stem for p in a.results]
    if len(names) != len(a.results):
        raise ConfigError(f"{len(names)} names for {len(a.results)} results files")
    sums = [summarize(load_results(r), load_bundle(b)) for r, b in zip(a.results, bundles,
                                                                        strict=True)]
    path = write_report(sums, names, a.out, html=a.html)
    print(path.read_text())
    if a.html:
        print(f"HTML report: {path.with_name('report.html')}", file=sys.stderr)
    return 0


def cmd_train_cnn(a: argparse.Namespace) -> int:
    from edge_ee.data import load_fashion_mnist
    from edge_ee.train_cnn import accuracy, save_state, train_small_cnn
    model = train_small_cnn(load_fashion_mnist("train", a.data), a.epochs)
    save_state(model, a.out)
    print(f"test accuracy {accuracy(model, load_fashion_mnist('test', a.data)):.4f}; wrote {a.out}")
    return 0


COMMANDS = {"demo": cmd_demo, "build": cmd_build, "report": cmd_report, "train-cnn": cmd_train_cnn}

if __name__ == "__main__":
    sys.exit(main())
