"""`edge-ee-run BUNDLE`: verify, self-check, run samples, write raw results.json.

Exit codes: 0 done, 2 bad input (bundle, input, backend, a flag out of range), 130
interrupted by Ctrl-C (SIGINT), 143 by SIGTERM, 129 by SIGHUP: the samples done so far
are written and marked incomplete. Every numeric flag is checked before anything runs,
the output path before anything is measured; the manifest's sha256 is printed, recorded
in results.json and can be pinned (`--expect-manifest-sha256`) or its signature checked
(`--trust PUBKEY`, needs the `cryptography` package). `--measure-overheads` times a
candidates bundle's exits instead and writes an overheads file (`overheads.py`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from device_runners import argtypes as at
from device_runners.backends import BACKENDS, open_backend
from device_runners.decode import POLICIES, is_language_model, load_prompts
from device_runners.errors import BundleError, EdgeEEError
from device_runners.golden import self_check
from device_runners.inputs import load_input
from device_runners.manifest import load_bundle
from device_runners.results import check_output_path, results_document, spool_path, write_results
from device_runners.session import SessionConfig, measure
from device_runners.spool import Spool
from device_runners.strategies import (
    CHOICES,
    INGRAPH,
    available,
    choose,
    self_check_ingraph,
)

#: exit code when a signal stopped the run (128 + signal number, as shells report it)
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


def build_parser() -> argparse.ArgumentParser:
    from device_runners import __version__
    p = argparse.ArgumentParser(prog="edge-ee-run", description=__doc__.splitlines()[0],
                                formatter_class=at.DefaultsHelpFormatter)
    p.add_argument("--version", action="version", version=f"edge-ee-run {__version__}")
    p.add_argument("bundle", type=Path, help="bundle folder written by `edge-ee build` "
                   "(or seg-build, cluster, ...)")
    p.add_argument("--input", type=Path, default=None,
                   help=".npz with 'x' (raw uint8 NHWC or float32 model input) and optional 'y' "
                        "labels (make one with `edge-ee samples`), or an image folder "
                        "<class>/<image> decoded as the bundle records (needs Pillow: "
                        "edge-ee[images]); default: the bundle's golden inputs")
    p.add_argument("--out", type=Path, default=None,
                   help="results file (default: results.json; overheads.json with "
                        "--measure-overheads)")
    p.add_argument("--mode", choices=("single", "batch"), default="single",
                   help="single: one sample at a time; batch: shrinking batches")
    p.add_argument("--batch-size", type=at.integer(1, 1 << 20), default=32,
                   help="--mode batch: samples per batch")
    p.add_argument("--backend", choices=sorted(BACKENDS), default=None,
                   help="runtime backend (default: from the bundle's formats)")
    p.add_argument("--threads", type=at.integer(1, 1024), default=1,
                   help="intra-op threads of the runtime")
    p.add_argument("--warmup-runs", type=at.integer(0, 10**6), default=10,
                   help="unmeasured runs before the timed passes")
    p.add_argument("--limit", type=at.integer(1), default=None, help="run only the first N samples")
    p.add_argument("--strategy", choices=CHOICES, default="auto",
                   help="split: one graph per segment; ingraph: the exits as ONNX If in one graph "
                        "(bundles that carry it); auto: the faster of the two measured at start")
    p.add_argument("--no-exit", action="store_true",
                   help="ignore exit flags: every sample runs every segment (split overhead)")
    p.add_argument("--decoding", choices=POLICIES, default=None,
                   help="language models: calm (an exit's token is final, the skipped layers' "
                        "KV copied from its state) or verify (exits draft, the last segment "
                        "verifies: output = full depth); default: the bundle's exit_policy")
    p.add_argument("--new-tokens", type=at.integer(1, 1 << 20), default=None,
                   help="language models: tokens to generate per prompt (default: the input "
                        "file's max_new_tokens, else the bundle's default_new_tokens)")
    p.add_argument("--min-runs", type=at.integer(0, 10**10), default=0,
                   help="repeat passes over the inputs until at least this many samples ran")
    p.add_argument("--min-duration-s", type=at.number(0, 30 * 86400), default=0.0,
                   help="… and until at least this long (energy per inference needs ≥ 2 s)")
    p.add_argument("--max-runs", type=at.integer(1), default=None,
                   help="cap on runtime calls (samples; batches in batch mode); default none")
    p.add_argument("--max-duration-s", type=at.number(0, 30 * 86400, lo_open=True), default=None,
                   help="cap on the measured window in seconds; default none")
    p.add_argument("--profile", default="auto",
                   help="hardware profile name or YAML path; 'auto' detects the board, 'none'")
    p.add_argument("--power-source", default="auto",
                   help="auto, ina3221_hwmon, ina3221_iio, rpi5_pmic, rapl, ina2xx_hwmon, "
                        "usb_meter_csv, estimated or null")
    p.add_argument("--power-period-ms", type=at.number(0, 600_000, lo_open=True), default=None,
                   help="sampling period (default: the sensor's update period)")
    p.add_argument("--idle-s", type=at.number(0, 3600), default=2.0,
                   help="seconds of idle power measured before the run (0: none)")
    p.add_argument("--meter-csv", default=None, help="external USB meter CSV log")
    p.add_argument("--meter-clock-offset-ms", type=at.number(-1e9, 1e9), default=0.0,
                   help="--meter-csv: the meter clock minus this machine's clock, in ms")
    p.add_argument("--pin-cores", type=at.int_list(0), default=None,
                   help="comma-separated CPU cores to run on")
    p.add_argument("--expect-manifest-sha256", type=at.hex_digest, default=None, metavar="HEX",
                   help="refuse the bundle unless its manifest has this sha256 (pin a bundle)")
    p.add_argument("--trust", type=Path, default=None, metavar="PUBKEY",
                   help="refuse the bundle unless manifest.sig verifies with this Ed25519 "
                        "public key (edge-ee sign; needs the cryptography package)")
    p.add_argument("--skip-self-check", action="store_true",
                   help="do not compare with golden outputs first (not recommended)")
    p.add_argument("--measure-overheads", action="store_true",
                   help="instead of running samples: time what each candidate exit (boundary "
                        "and head) costs on this device and write an overheads file for "
                        "`edge-ee build --overheads FILE` (needs a bundle built with --candidates)")
    p.add_argument("--overhead-rounds", type=at.integer(20, 10**7), default=200,
                   help="with --measure-overheads: interleaved timing rounds at least")
    p.add_argument("--overhead-block", type=at.integer(1, 1000), default=5,
                   help="with --measure-overheads: calls of each graph back to back per round "
                        "(the first re-warms its caches, the median of the rest counts; 1: "
                        "one cold call per round)")
    p.add_argument("--overhead-min-s", type=at.number(0, 86400), default=3.0,
                   help="with --measure-overheads: and at least this many seconds of timing")
    p.add_argument("--quiet", action="store_true", help="no progress or log lines, errors only")
    return p


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


class _Signals:
    """SIGTERM and SIGHUP act like Ctrl-C: the first one stops the run (KeyboardInterrupt,
    which the session turns into partial results); later ones are ignored until the
    results are written."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.deferred = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
            if not self.deferred:
                raise KeyboardInterrupt

    def defer(self) -> None:
        """From now on a signal is only noted: the measurement is over, results get written."""
        self.deferred = True

    def install(self) -> None:
        self.previous = {s: signal.signal(s, self) for s in SIGNAL_EXIT}

    def restore(self) -> None:
        """Put back the handlers found (main() may be called in-process, e.g. by the demo)."""
        for s, handler in getattr(self, "previous", {}).items():
            signal.signal(s, handler)

    def exit_code(self) -> int:
        return SIGNAL_EXIT.get(self.received or signal.SIGINT, 130)

    def name(self) -> str:
        return signal.Signals(self.received or signal.SIGINT).name


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sig = _Signals()
    sig.install()
    try:
        return _run(args, sig)
    except EdgeEEError as err:
        print(f"edge-ee-run: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"edge-ee-run: interrupted ({sig.name()}) before measuring; nothing was written",
              file=sys.stderr)
        return sig.exit_code()
    finally:
        sig.restore()


def _open_bundle(args: argparse.Namespace, log: Any) -> Any:
    bundle = load_bundle(args.bundle)
    log(f"bundle {bundle.root}: manifest sha256 {bundle.manifest_sha256}")
    if args.expect_manifest_sha256 and args.expect_manifest_sha256 != bundle.manifest_sha256:
        raise BundleError(f"{bundle.root}: manifest sha256 is {bundle.manifest_sha256}, not the "
                          f"{args.expect_manifest_sha256} given with --expect-manifest-sha256; "
                          "this is another (or a changed) bundle — re-copy the one you meant")
    signature = None
    if args.trust is not None:
        from device_runners.signing import verify_signature
        signature = verify_signature(bundle, args.trust)
        log(f"signature verified with {args.trust} (key sha256 "
            f"{signature['public_key_sha256'][:16]}…)")
    return bundle, signature


def _run(args: argparse.Namespace, sig: _Signals) -> int:
    t_init = time.perf_counter_ns()
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    if args.out is None:
        args.out = Path("overheads.json" if args.measure_overheads else "results.json")
    check_output_path(args.out)
    bundle, signature = _open_bundle(args, log)
    if args.measure_overheads:
        return _measure_overheads(args, bundle, log)
    cfg = SessionConfig(
        mode=args.mode, batch_size=args.batch_size, warmup_runs=args.warmup_runs,
        min_runs=args.min_runs, min_duration_s=args.min_duration_s, no_exit=args.no_exit,
        profile=args.profile, power_source=args.power_source,
        power_period_ms=args.power_period_ms, idle_s=args.idle_s, meter_csv=args.meter_csv,
        meter_clock_offset_ms=args.meter_clock_offset_ms, pin_cores=args.pin_cores,
        max_runs=args.max_runs, max_duration_s=args.max_duration_s)
    lm = is_language_model(bundle)
    if lm and args.decoding:  # a runtime choice: the manifest (and its sha256) stay as read
        bundle.manifest["language_model"]["exit_policy"] = args.decoding
    backend = open_backend(bundle, args.backend, args.threads)
    init_ns = time.perf_counter_ns() - t_init
    check = None if args.skip_self_check else self_check(bundle, backend)
    if lm:  # rows: the prompt, then a −1 slot per token to generate (one unit per position)
        x, y = load_prompts(bundle, args.input, args.limit, args.new_tokens)
        if y is not None:
            from device_runners.recorders import recorder_for
            y = recorder_for(bundle).check_labels(bundle, y, len(x))
        dropped = {"count": 0, "indices": []}
    else:
        x, y, dropped = load_input(bundle, args.input, args.limit)
    if dropped["count"]:
        log(f"warning: {dropped['count']} input samples hold NaN/inf and are not run "
            f"(recorded under protocol.nonfinite_inputs)")
    unit = 1 if args.mode == "single" else args.batch_size
    if check is not None and args.strategy != "split" and INGRAPH in available(bundle, backend):
        check["ingraph"] = self_check_ingraph(bundle, backend)
    strategy, why = choose(bundle, backend, x, args.strategy, unit, args.no_exit)
    log(f"strategy: {strategy} ({why['reason']})")
    cfg = replace(cfg, strategy=strategy)
    total = len(x) if args.mode == "single" else (len(x) + args.batch_size - 1) // args.batch_size
    spool = Spool(spool_path(args.out))  # every unit's record goes to disk as it is made
    run = measure(bundle, backend, x, y, cfg, _Progress(total, args.quiet), log, spool)
    sig.defer()
    if not args.quiet:
        print(file=sys.stderr)
    task = (bundle.manifest.get("model") or {}).get("task", "classification")
    protocol = {"mode": args.mode, "batch_size": args.batch_size if args.mode == "batch" else 1,
                "warmup_runs": args.warmup_runs, "no_exit": args.no_exit,
                "min_runs": args.min_runs, "min_duration_s": args.min_duration_s,
                "max_runs": args.max_runs, "max_duration_s": args.max_duration_s,
                "pin_cores": cfg.pin_cores, "input": str(args.input) if args.input else "golden",
                "labels": y is not None, "units": len(x), "nonfinite_inputs": dropped}
    if lm:
        protocol.update(exit_policy=bundle.manifest["language_model"].get("exit_policy", "calm"),
                        new_tokens=int((x[0] < 0).sum()) if len(x) else 0)
    results = results_document(bundle, backend, args.threads, protocol, init_ns, check, run,
                               task=None if task == "classification" else task)
    results["bundle"]["signature"] = signature
    results["strategy"] = why
    if not run["complete"]:
        results["interrupted_by"] = sig.name()
    write_results(args.out, results, spool=spool)
    if not args.quiet:
        n = len(spool)
        unit = {"segmentation": "images", "language-model": "generated tokens"}.get(task, "samples")
        print(f"wrote {args.out} ({n} {unit}"
              f"{'' if run['complete'] else ', INCOMPLETE: interrupted by ' + sig.name()})",
              file=sys.stderr)
    return 0 if run["complete"] else sig.exit_code()


def _measure_overheads(args: argparse.Namespace, bundle: Any, log: Any) -> int:
    """--measure-overheads: self-check, time the candidate graphs, write the file atomically."""
    from device_runners.files import atomic_write_json
    from device_runners.overheads import (
        OverheadProtocol,
        candidates_section,
        measure_overheads,
        overheads_document,
    )
    from device_runners.schema import validate_overheads
    from device_runners.session import resolve_profile
    candidates_section(bundle)  # before anything runs: is there anything to measure?
    backend = open_backend(bundle, args.backend, args.threads)
    if not args.skip_self_check:
        self_check(bundle, backend)
    protocol = OverheadProtocol(rounds=args.overhead_rounds, warmup_rounds=args.warmup_runs,
                                min_duration_s=args.overhead_min_s, block=args.overhead_block)
    _, profile = resolve_profile(SessionConfig(profile=args.profile))
    log(f"timing candidate exits: ≥ {protocol.rounds} interleaved rounds, ≥ "
        f"{protocol.min_duration_s} s ({backend.version()}, {args.threads} thread(s))")
    doc = overheads_document(bundle, backend, type(backend).name, measure_overheads(
        bundle, backend, protocol), profile)
    validate_overheads(doc, BundleError, str(args.out))
    atomic_write_json(args.out, doc)
    for e in doc["exits"]:
        ig = (f"; in-graph {e['ingraph_fraction']:+.4f} ({e['ingraph_us']:.1f} us)"
              if e.get("ingraph_fraction") is not None else "")
        log(f"  exit {e['exit_index']}: boundary {e['boundary_fraction']:+.4f} of the full "
            f"network ({e['boundary_us']:.1f} us), head {e['head_us']:.1f} us{ig}")
    log(f"full network {doc['full_latency_us']:.1f} us over {doc['rounds']} rounds; wrote "
        f"{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
