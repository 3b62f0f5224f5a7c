"""`edge-ee-run BUNDLE`: verify, self-check, run samples, write raw results.json.

Exit codes: 0 done, 2 bad input (bundle, input, backend), 130 interrupted (the
samples done so far are written and marked incomplete).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from device_runners.backends import BACKENDS, open_backend
from device_runners.decode import is_language_model, run_language_model
from device_runners.errors import EdgeEEError, InputSpecError
from device_runners.manifest import Bundle, load_bundle, prepare_input
from device_runners.pixel_runner import is_segmentation
from device_runners.results import atomic_write_json, results_document
from device_runners.runner import self_check
from device_runners.session import SessionConfig, measure


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-ee-run", description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path, help="bundle folder written by `edge-ee export`")
    p.add_argument("--input", type=Path, default=None,
                   help=".npz with 'x' (raw uint8 NHWC or float32 model input) and optional 'y' "
                        "labels; default: the bundle's golden inputs")
    p.add_argument("--out", type=Path, default=Path("results.json"), help="results file")
    p.add_argument("--mode", choices=("single", "batch"), default="single",
                   help="single: one sample at a time; batch: shrinking batches")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--backend", choices=sorted(BACKENDS), default=None,
                   help="runtime backend (default: from the bundle's formats)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the runtime")
    p.add_argument("--warmup-runs", type=int, default=10)
    p.add_argument("--limit", type=int, default=None, help="run only the first N samples")
    p.add_argument("--no-exit", action="store_true",
                   help="ignore exit flags: every sample runs every segment (split overhead)")
    p.add_argument("--min-runs", type=int, default=0,
                   help="repeat passes over the inputs until at least this many samples ran")
    p.add_argument("--min-duration-s", type=float, default=0.0,
                   help="… and until at least this long (energy per inference needs ≥ 2 s)")
    p.add_argument("--profile", default="auto",
                   help="hardware profile name or YAML path; 'auto' detects the board, 'none'")
    p.add_argument("--power-source", default="auto",
                   help="auto, ina3221_hwmon, ina3221_iio, rpi5_pmic, rapl, ina2xx_hwmon, "
                        "usb_meter_csv, estimated or null")
    p.add_argument("--power-period-ms", type=float, default=None,
                   help="sampling period (default: the sensor's update period)")
    p.add_argument("--idle-s", type=float, default=2.0,
                   help="seconds of idle power measured before the run (0: none)")
    p.add_argument("--meter-csv", default=None, help="external USB meter CSV log")
    p.add_argument("--meter-clock-offset-ms", type=float, default=0.0)
    p.add_argument("--pin-cores", default=None, help="comma-separated CPU cores to run on")
    p.add_argument("--skip-self-check", action="store_true",
                   help="do not compare with golden outputs first (not recommended)")
    p.add_argument("--quiet", action="store_true")
    return p


def load_input(bundle: Bundle, path: Path | None, limit: int | None
               ) -> tuple[np.ndarray, np.ndarray | None]:
    if path is None:
        x, y = bundle.golden()["input"], None
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise InputSpecError(f"{path} has no array 'x'; save inputs as np.savez(f, x=..., y=...)")
                x = z["x"]
                y = z["y"] if "y" in z.files else None
        except (OSError, ValueError) as err:
            raise InputSpecError(f"cannot read {path}: {err}; pass an .npz file") from err
    if limit is not None:
        x = x[:limit]
        y = None if y is None else y[:limit]
    if y is not None:
        k = len(bundle.manifest["classes"])
        if len(y) != len(x):
            raise InputSpecError(f"{len(x)} inputs but {len(y)} labels in {path}")
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise InputSpecError(f"labels in {path} must be in 0..{k - 1}")
    return prepare_input(bundle, x), y


class _Progress:
    """A one-line progress counter on stderr (no dependency), restarting each pass."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.done, self.quiet, self.t0 = max(total, 1), 0, quiet, time.monotonic()

    def __call__(self, step: int = 1) -> None:
        self.done += step
        n_pass, i = divmod(self.done - 1, self.total)
        if not self.quiet and ((i + 1) == self.total or (i + 1) % max(1, self.total // 20) == 0):
            print(f"\r  pass {n_pass + 1}: {i + 1}/{self.total} "
                  f"({time.monotonic() - self.t0:.1f} s)", end="", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except EdgeEEError as err:
        print(f"edge-ee-run: error: {err}", file=sys.stderr)
        return err.exit_code


def _run(args: argparse.Namespace) -> int:
    t_init = time.perf_counter_ns()
    bundle = load_bundle(args.bundle)
    cfg = SessionConfig(
        mode=args.mode, batch_size=args.batch_size, warmup_runs=args.warmup_runs,
        min_runs=args.min_runs, min_duration_s=args.min_duration_s, no_exit=args.no_exit,
        profile=args.profile, power_source=args.power_source,
        power_period_ms=args.power_period_ms, idle_s=args.idle_s, meter_csv=args.meter_csv,
        meter_clock_offset_ms=args.meter_clock_offset_ms,
        pin_cores=tuple(int(c) for c in args.pin_cores.split(",")) if args.pin_cores else None)
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    if is_segmentation(bundle):  # per-pixel exits: device_runners/pixel_session.py
        from device_runners.pixel_session import run_segmentation
        return run_segmentation(args, bundle, t_init, cfg, lambda n: _Progress(n, args.quiet), log)
    if is_language_model(bundle):  # token-by-token decoding: device_runners/decode.py
        return run_language_model(args, bundle, t_init, cfg, lambda n: _Progress(n, args.quiet), log)
    backend = open_backend(bundle, args.backend, args.threads)
    init_ns = time.perf_counter_ns() - t_init
    check = None if args.skip_self_check else self_check(bundle, backend)
    x, y = load_input(bundle, args.input, args.limit)
    total = len(x) if args.mode == "single" else (len(x) + args.batch_size - 1) // args.batch_size
    run = measure(bundle, backend, x, y, cfg, _Progress(total, args.quiet), log)
    if not args.quiet:
        print(file=sys.stderr)
    protocol = {"mode": args.mode, "batch_size": args.batch_size if args.mode == "batch" else 1,
                "warmup_runs": args.warmup_runs, "no_exit": args.no_exit,
                "min_runs": args.min_runs, "min_duration_s": args.min_duration_s,
                "pin_cores": cfg.pin_cores, "input": str(args.input) if args.input else "golden"}
    results = results_document(bundle, backend, args.threads, protocol, init_ns, check, run)
    atomic_write_json(args.out, results)
    if not args.quiet:
        print(f"wrote {args.out} ({len(run['samples'].get('exit', []))} samples"
              f"{'' if run['complete'] else ', INCOMPLETE: interrupted'})", file=sys.stderr)
    return 0 if run["complete"] else 130


if __name__ == "__main__":
    sys.exit(main())
