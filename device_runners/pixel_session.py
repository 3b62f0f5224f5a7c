"""`edge-ee-run` on a segmentation bundle: the measured session and its results.json.

Same protocol as classification (`device_runners.session`): the hardware profile, the
power source with its idle baseline, warm-up runs, then passes over the images until
`min_runs` images and `min_duration_s` are reached, system state before and after; the
building blocks are imported from there. Images run one at a time (gathered execution).

Per image (`samples`, column-wise): latency_ns (end to end, perf_counter_ns),
segment_latency_ns (each `session.run` that ran), assemble_latency_ns, tokens_per_exit
(how many of the h*w tokens stopped at each exit), and on the first pass the flattened
(K,K) confusion matrix against the labels when labels are given (the host computes
mIoU from them). `exit_maps` keeps the token exit map of the first images for overlays.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from device_runners.errors import BackendError
from device_runners.manifest import Bundle
from device_runners.pixel_runner import PixelRunner, confusion, load_pixel_input, self_check
from device_runners.results import atomic_write_json, results_document
from device_runners.session import SessionConfig, measure_window

EXIT_MAP_IMAGES = 8
FIELDS = ("image", "pass", "latency_ns", "segment_latency_ns", "assemble_latency_ns",
          "tokens_per_exit", "confusion")


def _one_pass(runner: PixelRunner, x: np.ndarray, y: np.ndarray | None, no_exit: bool,
              pass_index: int, rec: dict[str, list], maps: dict[str, list], progress: Any) -> bool:
    """Every image once; False when interrupted (what ran so far is kept)."""
    k = runner.k
    void = int(runner.bundle.manifest["segmentation"]["void_label"])
    try:
        for n in range(len(x)):
            out = runner.run(x[n:n + 1], no_exit)
            conf = None
            if y is not None and pass_index == 0:
                conf = confusion(out.prediction, y[n], k, void).ravel().tolist()
            row = (n, pass_index, out.latency_ns, out.segment_latency_ns,
                   out.assemble_latency_ns,
                   np.bincount(out.token_exit, minlength=runner.num_exits).tolist(), conf)
            for key, v in zip(FIELDS, row, strict=True):
                rec[key].append(v)
            if pass_index == 0 and n < EXIT_MAP_IMAGES:
                maps["image"].append(n)
                maps["token_exit"].append(out.token_exit.tolist())
            if progress is not None:
                progress()
    except KeyboardInterrupt:
        return False
    return True


def measure_pixels(runner: PixelRunner, x: np.ndarray, y: np.ndarray | None,
                   cfg: SessionConfig, progress: Any = None, log: Any = print) -> dict[str, Any]:
    """Profile, power, warm-up and timed passes (`session.measure_window`), raw."""
    rec: dict[str, list] = {f: [] for f in FIELDS}
    maps: dict[str, list] = {"image": [], "token_exit": []}

    def warm() -> int | None:
        if not len(x):
            return None
        first_ns = runner.run(x[:1], cfg.no_exit).latency_ns
        for _ in range(max(cfg.warmup_runs - 1, 0)):
            runner.run(x[:1], cfg.no_exit)
        return first_ns

    def passes() -> tuple[dict[str, list], None, bool]:
        t0, n_pass = time.monotonic(), 0
        while True:
            complete = _one_pass(runner, x, y, cfg.no_exit, n_pass, rec, maps, progress)
            n_pass += 1
            if not complete or len(x) == 0 or (len(rec["image"]) >= cfg.min_runs and
                                              time.monotonic() - t0 >= cfg.min_duration_s):
                return rec, None, complete

    run = measure_window(cfg, warm, passes, log)
    run.update(samples=rec, exit_maps=maps)  # kept, even when interrupted during warm-up
    return run


def run_segmentation(args: argparse.Namespace, bundle: Bundle, t_init_ns: int,
                     session_config: SessionConfig, progress: Any, log: Any) -> int:
    """The segmentation branch of `edge-ee-run`, after the bundle's checksums were verified.

    `progress(n_images)` makes the progress counter; `log(message)` prints to stderr.
    """
    if args.mode != "single":
        raise BackendError("segmentation bundles run one image at a time (gathered tokens); "
                           "drop --mode batch")
    if args.backend not in (None, PixelRunner.name):
        raise BackendError(f"segmentation bundles run on onnxruntime only, not {args.backend}")
    runner = PixelRunner(bundle, args.threads)
    init_ns = time.perf_counter_ns() - t_init_ns
    check = None if args.skip_self_check else self_check(bundle, runner)
    x, y = load_pixel_input(bundle, args.input, args.limit)
    run = measure_pixels(runner, x, y, session_config, progress(len(x)), log)
    protocol = {"mode": "single", "batch_size": 1, "warmup_runs": args.warmup_runs,
                "no_exit": args.no_exit, "min_runs": args.min_runs,
                "min_duration_s": args.min_duration_s, "pin_cores": session_config.pin_cores,
                "input": str(args.input) if args.input else "golden",
                "labels": y is not None, "images": len(x)}
    results = results_document(bundle, runner, args.threads, protocol, init_ns, check, run,
                               task="segmentation")
    atomic_write_json(args.out, results)
    if not args.quiet:
        print(f"\nwrote {args.out} ({len(run['samples']['image'])} images"
              f"{'' if run['complete'] else ', INCOMPLETE: interrupted'})", file=sys.stderr)
    return 0 if run["complete"] else 130
