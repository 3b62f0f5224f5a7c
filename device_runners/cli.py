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

from device_runners import __version__
from device_runners.backends import BACKENDS, open_backend
from device_runners.errors import EdgeEEError, InputSpecError
from device_runners.manifest import Bundle, load_bundle, prepare_input
from device_runners.results import RESULTS_SCHEMA_VERSION, atomic_write_json, environment
from device_runners.runner import run_batch, run_single, self_check, warm_up


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
    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.done, self.quiet, self.t0 = total, 0, quiet, time.monotonic()

    def __call__(self, step: int = 1) -> None:
        self.done += step
        if not self.quiet and (self.done == self.total or self.done % max(1, self.total // 20) == 0):
            print(f"\r  {self.done}/{self.total} ({time.monotonic() - self.t0:.1f} s)",
                  end="", file=sys.stderr, flush=True)


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
    backend = open_backend(bundle, args.backend, args.threads)
    init_ns = time.perf_counter_ns() - t_init
    check = None if args.skip_self_check else self_check(bundle, backend)
    x, y = load_input(bundle, args.input, args.limit)
    t0 = time.perf_counter_ns()
    warm_up(bundle, backend, x, 1)
    first_ns = time.perf_counter_ns() - t0
    warm_up(bundle, backend, x, max(args.warmup_runs - 1, 0))
    started = time.monotonic_ns()
    batches = None
    if args.mode == "single":
        samples, complete = run_single(bundle, backend, x, y, args.no_exit,
                                       _Progress(len(x), args.quiet))
    else:
        n_b = (len(x) + args.batch_size - 1) // args.batch_size
        samples, batches, complete = run_batch(bundle, backend, x, y, args.batch_size,
                                               args.no_exit, _Progress(n_b, args.quiet))
    ended = time.monotonic_ns()
    if not args.quiet:
        print(file=sys.stderr)
    results = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "kind": "edge-ee-results",
        "runner_version": __version__,
        "bundle": {"manifest_sha256": bundle.manifest_sha256,
                   "model": bundle.manifest["model"]["name"], "path": str(bundle.root)},
        "backend": {"name": backend.name, "version": backend.version(), "threads": args.threads},
        "environment": environment(),
        "protocol": {"mode": args.mode, "batch_size": args.batch_size if args.mode == "batch"
                     else 1, "warmup_runs": args.warmup_runs, "no_exit": args.no_exit,
                     "input": str(args.input) if args.input else "golden"},
        "init_ns": init_ns,
        "first_inference_ns": first_ns,
        "self_check": check,
        "started_monotonic_ns": started,
        "ended_monotonic_ns": ended,
        "complete": complete,
        "samples": samples,
        "batches": batches,
        "profile": None,
        "power": None,
    }
    atomic_write_json(args.out, results)
    if not args.quiet:
        print(f"wrote {args.out} ({len(samples['exit'])} samples"
              f"{'' if complete else ', INCOMPLETE: interrupted'})", file=sys.stderr)
    return 0 if complete else 130


if __name__ == "__main__":
    sys.exit(main())
