"""Energy from power samples, idle baselines, and choosing a power source that never fails.

- `integrate_energy_mj`: trapezoid rule over a window of (timestamp_ns, power_mw) samples,
  interpolating at the window's edges (mW × s = mJ).
- `window_energy`: the same plus coverage/gap checks against the sampling period and the
  sampler's error windows.
- `measure_idle_baseline`: sample for N seconds before the run; its mean power is the
  baseline that `energy_summary` subtracts (total and above-idle energy in mJ).
- `energy_summary`: energy per inference only when the window is long enough for the
  sensor's update rate; a warning otherwise.
- `choose_power_source(profile, requested)`: tries the requested or the profile's
  sensors, then generic probes, then `estimated` (with a profile) or `null`; it returns
  the opened source and a human-readable reason and never raises because power cannot
  be read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from device_runners.errors import EdgeEEError, PowerSourceError
from device_runners.power.base import POWER_SOURCES, PowerSource, create_power_source
from device_runners.power.estimated import EstimatedPower, NullPower
from device_runners.power.sampler import PowerSampler

_log = logging.getLogger(__name__)

#: Probed (in this order) after the profile's own sensors when `requested` is "auto".
GENERIC_PROBES = ("ina3221_hwmon", "ina3221_iio", "rpi5_pmic", "ina2xx_hwmon", "rapl")
#: A window for energy per inference must last this long ...
MIN_WINDOW_S = 2.0
#: ... and cover at least this many sensor updates.
MIN_UPDATES_PER_WINDOW = 20


def integrate_energy_mj(timestamps_ns: Sequence[int] | np.ndarray,
                        power_mw: Sequence[float] | np.ndarray,
                        start_ns: int | None = None, end_ns: int | None = None) -> float:
    """Trapezoid-rule energy in mJ over [start_ns, end_ns] (clipped to the samples)."""
    t = np.asarray(timestamps_ns, dtype=np.int64)
    p = np.asarray(power_mw, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 1:
        raise EdgeEEError("timestamps_ns and power_mw must be 1-D and of equal length")
    if t.size < 2:
        return 0.0
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    a = int(t[0]) if start_ns is None else max(int(start_ns), int(t[0]))
    b = int(t[-1]) if end_ns is None else min(int(end_ns), int(t[-1]))
    if b <= a:
        return 0.0
    inside = (t > a) & (t < b)
    tt = np.concatenate(([a], t[inside], [b])).astype(np.float64)
    pp = np.concatenate(([np.interp(a, t, p)], p[inside], [np.interp(b, t, p)]))
    return float(np.sum((pp[1:] + pp[:-1]) * 0.5 * np.diff(tt)) * 1e-9)


@dataclass(frozen=True)
class EnergyWindow:
    start_ns: int
    end_ns: int
    duration_ns: int
    energy_mj: float
    mean_power_mw: float | None
    n_samples: int
    max_gap_ns: int
    complete: bool
    warnings: tuple[str, ...] = ()


def window_energy(timestamps_ns: Sequence[int] | np.ndarray, power_mw: Sequence[float] | np.ndarray,
                  start_ns: int, end_ns: int, *, period_ms: float | None = None,
                  error_windows: Sequence[tuple[int, int]] = ()) -> EnergyWindow:
    """Energy over [start_ns, end_ns] with checks: coverage, gaps, sensor errors."""
    t = np.sort(np.asarray(timestamps_ns, dtype=np.int64))
    warnings: list[str] = []
    duration_ns = int(end_ns - start_ns)
    if duration_ns <= 0:
        raise EdgeEEError(f"energy window ends before it starts ({start_ns} .. {end_ns})")
    if t.size < 2 or t[0] > start_ns or t[-1] < end_ns:
        covered = 0 if t.size < 2 else max(0, min(end_ns, t[-1]) - max(start_ns, t[0]))
        warnings.append(f"power samples cover {covered / 1e9:.3f} s of the {duration_ns / 1e9:.3f}"
                        " s window; start the sampler before and stop it after the run")
    energy = integrate_energy_mj(timestamps_ns, power_mw, start_ns, end_ns)
    inside = t[(t >= start_ns) & (t <= end_ns)]
    edges = np.concatenate(([start_ns], inside, [end_ns]))
    max_gap = int(np.max(np.diff(edges))) if edges.size > 1 else duration_ns
    if period_ms and max_gap > 3 * period_ms * 1e6:
        warnings.append(f"a gap of {max_gap / 1e6:.1f} ms between power samples "
                        f"(period {period_ms:.1f} ms): the sensor stalled or failed")
    overlapping = [w for w in error_windows if w[0] <= end_ns and w[1] >= start_ns]
    if overlapping:
        warnings.append(f"the power sensor failed {len(overlapping)} time(s) inside this window; "
                        "its energy is incomplete, rerun or use another --power-source")
    covered_ns = max(0, min(end_ns, int(t[-1])) - max(start_ns, int(t[0]))) if t.size > 1 else 0
    mean = energy / (covered_ns * 1e-9) if covered_ns > 0 else None
    return EnergyWindow(int(start_ns), int(end_ns), duration_ns, energy, mean, int(inside.size),
                        max_gap, not warnings, tuple(warnings))


@dataclass(frozen=True)
class IdleBaseline:
    power_mw: float | None
    duration_ns: int
    energy_mj: float
    n_samples: int
    start_ns: int
    end_ns: int
    complete: bool
    is_estimate: bool
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"idle_power_mw": self.power_mw, "duration_ns": self.duration_ns,
                "energy_mj": self.energy_mj, "n_samples": self.n_samples,
                "start_ns": self.start_ns, "end_ns": self.end_ns, "complete": self.complete,
                "is_estimate": self.is_estimate, "warnings": list(self.warnings)}


def measure_idle_baseline(sampler: PowerSampler, duration_s: float, *,
                          sleep: Callable[[float], None] = time.sleep) -> IdleBaseline:
    """Let the running `sampler` record `duration_s` of idle; its mean power is the baseline.

    Waits for a sample on both sides of the window so its edges are covered.
    """
    sampler.wait_for_sample_after(-1)
    start_ns = sampler.mark("idle_start")
    sleep(duration_s)
    end_ns = sampler.mark("idle_end")
    sampler.wait_for_sample_after(end_ns)
    t, p = sampler.series()
    w = window_energy(t, p, start_ns, end_ns, period_ms=sampler.period_ms,
                      error_windows=sampler.error_windows)
    return IdleBaseline(w.mean_power_mw, w.duration_ns, w.energy_mj, w.n_samples, start_ns,
                        end_ns, w.complete, sampler.source.is_estimate, w.warnings)


def min_window_ns(update_period_ms: float, min_window_s: float = MIN_WINDOW_S,
                  min_updates: int = MIN_UPDATES_PER_WINDOW) -> int:
    """Shortest window over which energy per inference is reported for this sensor."""
    return int(max(min_window_s * 1e9, min_updates * update_period_ms * 1e6))


def energy_summary(window: EnergyWindow, n_inferences: int, *, update_period_ms: float,
                   idle_power_mw: float | None = None, is_estimate: bool = False,
                   min_window_s: float = MIN_WINDOW_S) -> dict[str, Any]:
    """Total and above-idle energy (mJ) of a window, and per inference when it is long enough."""
    warnings = list(window.warnings)
    above = None
    if idle_power_mw is not None:
        above = window.energy_mj - idle_power_mw * window.duration_ns * 1e-9
        if above < 0:
            warnings.append("energy above idle is negative: the idle baseline is noisier than "
                            "the workload's draw; lengthen the idle measurement and the run")
    per, per_above = None, None
    needed_ns = min_window_ns(update_period_ms, min_window_s)
    if n_inferences <= 0:
        warnings.append("no inferences in the window; energy per inference not computed")
    elif window.duration_ns < needed_ns:
        warnings.append(
            f"window of {window.duration_ns / 1e9:.3f} s is shorter than the {needed_ns / 1e9:.2f}"
            f" s needed for a sensor updating every {update_period_ms:g} ms; energy per "
            "inference not computed: raise --min-duration-s"
        )
    else:
        per = window.energy_mj / n_inferences
        per_above = above / n_inferences if above is not None else None
    return {
        "label": "estimated" if is_estimate else "measured",
        "is_estimate": is_estimate,
        "duration_ns": window.duration_ns,
        "energy_mj": window.energy_mj,
        "mean_power_mw": window.mean_power_mw,
        "idle_power_mw": idle_power_mw,
        "above_idle_energy_mj": above,
        "n_inferences": n_inferences,
        "energy_per_inference_mj": per,
        "above_idle_energy_per_inference_mj": per_above,
        "complete": window.complete,
        "warnings": warnings,
    }


def _spec_options(spec: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"paths": spec.paths, "labels": spec.labels,
                            "board_total_rail": spec.board_total_rail}
    if spec.update_period_ms is not None:
        opts["update_period_ms"] = spec.update_period_ms
    return opts


def _try_open(name: str, options: Mapping[str, Any]) -> PowerSource:
    source = create_power_source(name, **options)
    source.open()
    try:
        if source.total_mw(source.read()) is None:
            raise PowerSourceError(f"{name}: opened but reported no rails")
    except BaseException:
        source.close()
        raise
    return source


def choose_power_source(profile: Any = None, requested: str | None = "auto", *,
                        root: str = "/",
                        options: Mapping[str, Any] | None = None) -> tuple[PowerSource, str]:
    """Open the best readable power source; fall back to `estimated` / `null` with a reason.

    `requested`: "auto" (profile's sensors, then generic probes), a registered name, or
    "estimated" / "null". Only an unknown name raises (a typo, not a sensor problem).
    """
    requested = (requested or "auto").strip().lower()
    if requested not in ("auto", *POWER_SOURCES):
        raise PowerSourceError(f"unknown power source '{requested}'; choose auto or one of: "
                               f"{', '.join(sorted(POWER_SOURCES))}")
    extra = dict(options or {})
    specs = list(getattr(profile, "power_sensors", ()) or ())
    candidates: list[tuple[str, dict[str, Any]]] = []
    if requested == "auto":
        candidates = [(s.kind, _spec_options(s)) for s in specs if s.kind in POWER_SOURCES]
        seen = {name for name, _ in candidates}
        candidates += [(n, {}) for n in GENERIC_PROBES if n not in seen]
    elif requested not in ("estimated", "null"):
        spec = next((s for s in specs if s.kind == requested), None)
        candidates = [(requested, {**(_spec_options(spec) if spec else {}), **extra})]
    failures: list[str] = []
    for name, opts in candidates:
        try:
            source = _try_open(name, {"root": root, **opts})
        except (EdgeEEError, OSError, ValueError) as exc:
            msg = str(exc)
            failures.append(msg if msg.startswith(name) else f"{name}: {msg}")
            continue
        how = "requested" if requested == name else "found automatically"
        return source, f"power from '{name}' ({how})"
    if requested == "null":
        null = NullPower(root)
        null.open()
        return null, "power not measured (--power-source null): latency only"
    why = "; ".join(failures) if failures else "requested"
    if requested == "auto" and failures:  # one short line; each probe's reason is kept apart
        for failure in failures:
            _log.info("power probe failed: %s", failure)
        why = "tried " + ", ".join(name for name, _ in candidates)
    if requested == "estimated" and profile is None:
        why = "estimated power needs a hardware profile (--profile NAME)"
    if profile is not None:
        try:
            est = EstimatedPower(root, profile=profile)
            est.open()
            est.read()
            est.probe_failures = list(failures)
            return est, (f"no power sensor could be read ({why}); using ESTIMATED power from "
                         f"profile '{profile.name}' (idle + utilisation x (max - idle))"
                         if failures else f"ESTIMATED power from profile '{profile.name}' "
                         "(requested)")
        except (EdgeEEError, OSError, ValueError) as exc:
            failures.append(f"estimated: {exc}")
            why = "; ".join(failures)
    null = NullPower(root)
    null.open()
    null.probe_failures = list(failures)
    hint = "" if profile is not None else " (pass --profile to get an estimate)"
    return null, f"no power source available ({why}); latency only{hint}"
