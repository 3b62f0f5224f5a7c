"""What a scorer costs: wall time, process CPU time and energy (estimated where no sensor).

Energy goes through the device side's power sources (`device_runners.power`): the best
readable sensor for the hardware profile, else the profile's `estimated` model (idle +
whole-machine CPU utilisation × (max − idle)), which is labelled estimated wherever it
appears. On a shared machine the estimate also sees other users' load, so process CPU
seconds are recorded beside it as the cleaner measure of the scorer's own work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from device_runners.power.energy import choose_power_source, integrate_energy_mj
from device_runners.power.sampler import PowerSampler
from device_runners.profiles import load_profile

T = TypeVar("T")


def measure(fn: Callable[[], T], profile: str = "generic-x86_64",
            power_source: str = "auto") -> tuple[T, dict[str, Any]]:
    """Run `fn()`; return its result and {wall_s, cpu_s, energy_mj, power source, estimated}."""
    prof = load_profile(profile)
    source, reason = choose_power_source(prof, power_source)
    sampler = PowerSampler(source, period_ms=max(source.update_period_ms, 100.0))
    cpu0, t0 = time.process_time(), time.perf_counter()
    with sampler:
        start = sampler.mark("start")
        result = fn()
        end = sampler.mark("end")
        sampler.wait_for_sample_after(end)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    samples = [s for s in sampler.samples if s.total_mw is not None]
    energy = (integrate_energy_mj([s.timestamp_ns for s in samples],
                                  [s.total_mw for s in samples], start, end)
              if len(samples) >= 2 else None)
    return result, {"wall_s": wall, "cpu_s": cpu, "energy_mj": energy,
                    "energy_wh": None if energy is None else energy / 3.6e6,
                    "power_source": source.name,
                    "energy_estimated": bool(getattr(source, "is_estimate", False)),
                    "power_reason": reason, "profile": prof.name}
