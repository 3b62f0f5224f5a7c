"""Benchmark protocol helpers (TFLite benchmark_model / MLPerf SingleStream style).

- `ProtocolConfig`: warm-up runs, then at least `min_runs` runs *and* `min_duration_s`
  seconds (capped by `max_runs` / `max_duration_s`), threads and optional core pinning.
- `run_timed(fn, config)`: runs that protocol with `time.perf_counter_ns()` per call and
  returns raw latencies (no statistics on the device), the first inference's latency and
  the monotonic window of the measured runs (to cut the power samples with).
- `percentiles(latencies_ns)`: p50/p90/p95/p99/max (host-side reports use it too).
- `system_state(root)`: governor, CPU frequencies, thermal zones, Pi throttling bits
  (`vcgencmd get_throttled`), Jetson power mode, peak RSS — recorded with every run.
- `pin_to_cores(cores)`: `os.sched_setaffinity` with a clear error.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device_runners.errors import EdgeEEError


@dataclass(frozen=True)
class ProtocolConfig:
    warmup_runs: int = 10
    min_runs: int = 100
    min_duration_s: float = 10.0
    max_runs: int = 100_000
    threads: int = 1
    pin_cores: tuple[int, ...] | None = None
    max_duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.pin_cores is not None and not isinstance(self.pin_cores, tuple):
            object.__setattr__(self, "pin_cores", tuple(self.pin_cores))
        problems = []
        if self.warmup_runs < 0:
            problems.append(f"warmup_runs must be >= 0 (got {self.warmup_runs})")
        if self.min_runs < 1:
            problems.append(f"min_runs must be >= 1 (got {self.min_runs})")
        if self.max_runs < self.min_runs:
            problems.append(f"max_runs ({self.max_runs}) must be >= min_runs ({self.min_runs})")
        if self.min_duration_s < 0:
            problems.append(f"min_duration_s must be >= 0 (got {self.min_duration_s})")
        if self.threads < 1:
            problems.append(f"threads must be >= 1 (got {self.threads})")
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            problems.append(f"max_duration_s must be > 0 (got {self.max_duration_s})")
        if problems:
            raise EdgeEEError("invalid benchmark protocol: " + "; ".join(problems)
                              + ". Fix the --warmup/--min-runs/--max-runs/--threads options")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pin_cores"] = list(self.pin_cores) if self.pin_cores is not None else None
        return data


def pin_to_cores(cores: Sequence[int]) -> list[int]:
    """Pin this process to `cores`; returns the previous affinity so it can be restored."""
    if not hasattr(os, "sched_setaffinity"):
        raise EdgeEEError("pinning to cores needs Linux (os.sched_setaffinity); "
                          "run without --pin-cores on this OS")
    previous = sorted(os.sched_getaffinity(0))
    wanted = sorted(set(cores))
    online = os.cpu_count() or 1
    bad = [c for c in wanted if c < 0 or c >= online]
    if not wanted or bad:
        raise EdgeEEError(f"cannot pin to cores {list(cores)}: this machine has cores "
                          f"0..{online - 1} (allowed now: {previous}); pass existing core "
                          "numbers to --pin-cores")
    try:
        os.sched_setaffinity(0, wanted)
    except OSError as exc:
        raise EdgeEEError(f"cannot pin to cores {wanted}: {exc}; they may be offline or "
                          f"outside this container's cpuset ({previous})") from exc
    return previous


def run_timed(fn: Callable[[], Any], config: ProtocolConfig, *,
              clock_ns: Callable[[], int] = time.perf_counter_ns,
              warmup_fn: Callable[[], Any] | None = None, stop_every: int = 1) -> dict[str, Any]:
    """Warm up (`warmup_fn`, default `fn`), then time `fn()` until min_runs and
    min_duration are both reached — checked only after a multiple of `stop_every` calls
    (e.g. whole passes over the inputs) — or a cap (max_runs, max_duration_s) is hit.
    Ctrl-C ends the timed runs early (`stopped_by: "interrupted"`); what ran is kept."""
    previous = pin_to_cores(config.pin_cores) if config.pin_cores else None
    try:
        warmup: list[int] = []
        first_ns: int | None = None
        for _ in range(config.warmup_runs):
            t0 = clock_ns()
            (warmup_fn or fn)()
            warmup.append(clock_ns() - t0)
        if warmup:
            first_ns = warmup[0]
        latencies: list[int] = []
        min_ns = int(config.min_duration_s * 1e9)
        max_ns = int(config.max_duration_s * 1e9) if config.max_duration_s else None
        start_mono = time.monotonic_ns()
        start = clock_ns()
        stopped_by = "min_runs_and_duration"
        t1 = start
        while True:
            t0 = clock_ns()
            try:
                fn()
            except KeyboardInterrupt:
                stopped_by = "interrupted"
                break
            t1 = clock_ns()
            latencies.append(t1 - t0)
            elapsed = t1 - start
            if (len(latencies) >= config.min_runs and elapsed >= min_ns
                    and len(latencies) % stop_every == 0):
                break
            if len(latencies) >= config.max_runs:
                stopped_by = "max_runs"
                break
            if max_ns is not None and elapsed >= max_ns:
                stopped_by = "max_duration_s"
                break
        end_mono = time.monotonic_ns()
        if first_ns is None and latencies:
            first_ns = latencies[0]
    finally:
        if previous is not None:
            os.sched_setaffinity(0, previous)
    return {
        "protocol": config.to_dict(),
        "first_inference_ns": first_ns,
        "warmup_latency_ns": warmup,
        "latency_ns": latencies,
        "runs": len(latencies),
        "duration_ns": end_mono - start_mono,
        "start_timestamp_ns": start_mono,
        "end_timestamp_ns": end_mono,
        "clock": "perf_counter_ns per call; window on monotonic_ns",
        "stopped_by": stopped_by,
    }


def percentiles(latencies_ns: Sequence[int] | np.ndarray) -> dict[str, float]:
    """p50/p90/p95/p99/max (plus min, mean, count) of latencies in ns."""
    x = np.asarray(latencies_ns, dtype=np.float64)
    if x.size == 0:
        raise EdgeEEError("no latencies to summarise; the run recorded no inferences")
    p50, p90, p95, p99 = np.percentile(x, [50, 90, 95, 99])
    return {"count": int(x.size), "min_ns": float(x.min()), "mean_ns": float(x.mean()),
            "p50_ns": float(p50), "p90_ns": float(p90), "p95_ns": float(p95),
            "p99_ns": float(p99), "max_ns": float(x.max())}


THROTTLE_BITS = {
    0: "under_voltage_now", 1: "arm_freq_capped_now", 2: "throttled_now",
    3: "soft_temp_limit_now", 16: "under_voltage_occurred", 17: "arm_freq_capped_occurred",
    18: "throttled_occurred", 19: "soft_temp_limit_occurred",
}


def decode_throttled(value: int) -> dict[str, bool]:
    """Decode `vcgencmd get_throttled` bits (Raspberry Pi documentation)."""
    return {name: bool(value >> bit & 1) for bit, name in THROTTLE_BITS.items()}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _run(argv: Sequence[str], timeout_s: float = 5.0) -> str | None:
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _cpu_index(path: Path) -> int:
    m = re.search(r"(\d+)$", path.name)
    return int(m[1]) if m else -1


def system_state(root: str | os.PathLike[str] = "/", *, run_tools: bool = True) -> dict[str, Any]:
    """Snapshot of what affects timing: governor, clocks, temperatures, throttling, RSS."""
    base = Path(root)
    state: dict[str, Any] = {"timestamp_ns": time.monotonic_ns()}
    governors: dict[str, str] = {}
    cur_mhz: dict[str, float] = {}
    max_mhz: dict[str, float] = {}
    cpus = sorted(base.glob("sys/devices/system/cpu/cpu[0-9]*"), key=_cpu_index)
    for cpu in cpus:
        freq = cpu / "cpufreq"
        if (g := _read(freq / "scaling_governor")) is not None:
            governors[cpu.name] = g
        for name, target in (("scaling_cur_freq", cur_mhz), ("cpuinfo_max_freq", max_mhz)):
            text = _read(freq / name)
            if text and text.isdigit():
                target[cpu.name] = int(text) / 1000.0  # kHz -> MHz
    state["governor"] = governors
    distinct = sorted(set(governors.values()))
    state["governor_summary"] = distinct[0] if len(distinct) == 1 else ",".join(distinct) or None
    state["cpu_freq_mhz"] = cur_mhz
    state["cpu_max_freq_mhz"] = max_mhz
    zones = []
    for zone in sorted(base.glob("sys/class/thermal/thermal_zone*"), key=_cpu_index):
        temp = _read(zone / "temp")
        zones.append({"zone": zone.name, "type": _read(zone / "type"),
                      "temp_c": int(temp) / 1000.0 if temp and temp.lstrip("-").isdigit()
                      else None})
    state["thermal_zones"] = zones
    state["throttled"] = None
    state["power_mode"] = None
    if run_tools:
        out = _run(["vcgencmd", "get_throttled"])
        m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", out or "")
        if m:
            value = int(m[1], 0)
            state["throttled"] = {"raw": m[1], **decode_throttled(value)}
        pm = _run(["nvpmodel", "-q"])
        if pm:
            state["power_mode"] = pm.strip().splitlines()[0]
    state["peak_rss_kib"] = peak_rss_kib()[0]
    state["cpu_affinity"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else None
    return state


def peak_rss_kib() -> tuple[int, str]:
    """Peak resident set size of this process's own address space in KiB, and where it was
    read: `VmHWM` of /proc/self/status (Linux: it starts afresh at exec, so a runner started
    from a big host process reports its own peak), else ru_maxrss, which Linux carries over
    fork + exec from the parent (a runner started by the torch demo showed torch's 680 MiB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]), "VmHWM"
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
