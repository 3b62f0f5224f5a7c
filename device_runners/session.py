"""The one measured run of every task: profile, power, idle baseline, warm-up, timed passes.

Read top to bottom, this is what `edge-ee-run` does after the bundle checked itself:
1. resolve the hardware profile (`auto` detects the board) and note mismatches;
2. open the best power source (falls back to `estimated`/`null`, never fails the run);
3. record system state (governor, temperatures, throttling) before;
4. sample idle power for `idle_s`, then warm up, then run the inputs pass after pass
   through `executor.execute` (`protocol.run_timed`) until both `min_runs` units and
   `min_duration_s` are reached, marking the window; the task's recorder keeps the records;
5. record system state after, stop sampling, return everything raw for results.json.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from device_runners.backends import Backend
from device_runners.errors import EdgeEEError
from device_runners.executor import warm_up
from device_runners.manifest import Bundle
from device_runners.power.energy import choose_power_source, measure_idle_baseline
from device_runners.power.sampler import PowerSampler
from device_runners.profiles import (
    HardwareProfile,
    detect_profile,
    load_profile,
    profile_mismatch_warnings,
)
from device_runners.protocol import ProtocolConfig, pin_to_cores, run_timed, system_state
from device_runners.recorders import recorder_for
from device_runners.spool import Spool
from device_runners.strategies import STRATEGIES


@dataclass(frozen=True)
class SessionConfig:
    """How to measure (CLI flags map 1:1)."""

    mode: str = "single"
    batch_size: int = 32
    warmup_runs: int = 10
    min_runs: int = 0
    min_duration_s: float = 0.0
    no_exit: bool = False
    profile: str | None = "auto"
    power_source: str = "auto"
    power_period_ms: float | None = None
    idle_s: float = 2.0
    meter_csv: str | None = None
    meter_clock_offset_ms: float = 0.0
    pin_cores: tuple[int, ...] | None = None
    root: str = "/"
    max_runs: int | None = None  # a cap on runtime calls (samples, or batches in batch mode)
    max_duration_s: float | None = None
    strategy: str = "split"  # `split` segments or `ingraph` exits (device_runners.strategies)


def resolve_profile(cfg: SessionConfig) -> tuple[HardwareProfile | None, dict[str, Any]]:
    """The profile to compare against, and how it was chosen (with mismatch warnings)."""
    if cfg.profile in (None, "", "none"):
        return None, {"name": None, "how": "no profile (--profile none)", "warnings": []}
    if cfg.profile == "auto":
        det = detect_profile(cfg.root)
        if det.profile is None:
            return None, {"name": None, "how": det.reason, "warnings": [det.reason]}
        prof = load_profile(det.profile)
        return prof, {"name": prof.name, "how": det.reason,
                      "warnings": profile_mismatch_warnings(prof, cfg.root),
                      "profile": prof.to_dict()}
    prof = load_profile(cfg.profile)
    return prof, {"name": prof.name, "how": "chosen with --profile",
                  "warnings": profile_mismatch_warnings(prof, cfg.root), "profile": prof.to_dict()}


def measure(bundle: Bundle, backend: Backend, x: np.ndarray, y: np.ndarray | None,
            cfg: SessionConfig, progress: Any = None, log: Any = print,
            spool: Spool | None = None) -> dict[str, Any]:
    """The measured run of any task: `execute` over the inputs, one sample (or one batch)
    per call, pass after pass until `min_runs` units and `min_duration_s` are both reached
    at the end of a pass (capped by `max_runs` / `max_duration_s`), inside
    `measure_window`. Records come from the task's recorder (into `spool` when given:
    bounded memory); everything is raw."""
    unit = cfg.batch_size if cfg.mode == "batch" else 1
    recorder = recorder_for(bundle)(bundle, y, cfg.mode, spool)
    run_one = STRATEGIES[cfg.strategy]
    steps = max(1, -(-len(x) // unit))
    calls = [0]

    def step() -> None:
        k = calls[0]
        start = (k % steps) * unit
        out = run_one(bundle, backend, x[start : start + unit], cfg.no_exit)
        recorder.add(out, start, k // steps)
        calls[0] += 1
        if progress is not None:
            progress()

    def warm() -> int | None:
        if not len(x):
            return None
        t0 = time.perf_counter_ns()
        split = cfg.strategy == "split"  # the split warms every segment (exits off)
        warm_up(bundle, backend, x, 1, no_exit=split, execute_fn=run_one)
        first_ns = time.perf_counter_ns() - t0
        warm_up(bundle, backend, x, max(cfg.warmup_runs - 1, 0), no_exit=split,
                execute_fn=run_one)
        return first_ns

    def passes() -> tuple[dict[str, list], list | None, bool]:
        if len(x):
            cap = cfg.max_runs or 1_000_000_000
            protocol = ProtocolConfig(
                warmup_runs=0, min_runs=min(max(1, -(-cfg.min_runs // unit)), cap),
                min_duration_s=cfg.min_duration_s, max_duration_s=cfg.max_duration_s,
                max_runs=cap)
            timed = run_timed(step, protocol, stop_every=steps)
            complete = timed["stopped_by"] != "interrupted"
        else:
            complete = True
        return recorder.columns(), recorder.batches, complete

    run = measure_window(cfg, warm, passes, log)
    run.update(samples=recorder.columns(), batches=recorder.batches, **recorder.extra)
    return run


def measure_window(cfg: SessionConfig, warm: Callable[[], int | None],
                   passes: Callable[[], tuple[dict[str, list], list | None, bool]],
                   log: Any = print) -> dict[str, Any]:
    """The protocol around any task's runs: profile, power source, pinning, system state,
    idle baseline, `warm()` (returns the first inference's ns), then the timed `passes()`
    inside the power window (returns samples, batches, complete). Raw, for results.json."""
    profile, prof_info = resolve_profile(cfg)
    for w in prof_info["warnings"]:
        log(f"warning: {w}")
    options: dict[str, Any] = {}
    if cfg.meter_csv:
        options = {"csv_path": cfg.meter_csv, "clock_offset_ms": cfg.meter_clock_offset_ms}
    source, reason = choose_power_source(profile, cfg.power_source, root=cfg.root,
                                         options=options)
    log(reason)
    previous = pin_to_cores(cfg.pin_cores) if cfg.pin_cores else None
    before = system_state(cfg.root)
    sampler = PowerSampler(source, cfg.power_period_ms)
    live = not getattr(source, "post_hoc", False)
    idle = None
    samples: dict[str, list] = {}
    batches: list | None = None
    complete, first_ns, start_ns = False, None, None
    try:
        if live:
            sampler.start()
            if cfg.idle_s > 0:
                idle = measure_idle_baseline(sampler, cfg.idle_s).to_dict()
        first_ns = warm()
        start_ns = sampler.mark("run_start")
        samples, batches, complete = passes()
    except KeyboardInterrupt:  # before the timed passes: nothing measured, marked incomplete
        log("interrupted before the measured run")
    finally:
        end_ns = sampler.mark("run_end")
        if live:
            if start_ns is not None:
                sampler.wait_for_sample_after(end_ns)
            sampler.stop()
        if previous is not None:
            os.sched_setaffinity(0, previous)
    power = sampler.to_dict()
    if not live:
        try:
            pts = source.load_samples(None, None)  # type: ignore[attr-defined]
            power["timestamp_ns"] = [int(t) for t, _ in pts]
            power["total_mw"] = [float(p) for _, p in pts]
        except (EdgeEEError, OSError, ValueError) as err:
            power["errors"].append({"timestamp_ns": end_ns, "error": str(err)})
    source.close()
    power.update(reason=reason, probe_failures=list(getattr(source, "probe_failures", [])),
                 idle=idle, window_ns=[start_ns, end_ns],
                 healthy=sampler.healthy, is_estimate=bool(source.is_estimate),
                 update_period_ms=source.update_period_ms)
    return {
        "profile": prof_info,
        "power": power,
        "system_state": {"before": before, "after": system_state(cfg.root)},
        "first_inference_ns": first_ns,
        "started_monotonic_ns": start_ns,
        "ended_monotonic_ns": end_ns,
        "complete": complete,
        "samples": samples,
        "batches": batches,
    }

