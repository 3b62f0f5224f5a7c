"""Power estimated from a hardware profile, and the `null` source for latency-only runs.

`estimated`: power_mw = idle_power_mw + utilisation × (max_power_mw − idle_power_mw),
where utilisation is the share of the device's CPUs that **this process** (the runner,
all its threads: runtime workers and the sampler) kept busy since the previous read:
Δ process CPU time / (Δ wall time × number of CPUs). The process CPU time comes from
`time.process_time_ns()` (CLOCK_PROCESS_CPUTIME_ID), so other processes' load on the same
machine does not become the bundle's energy; the number of CPUs is counted from the `cpuN`
lines of `/proc/stat`, since the profile's maximum power means every core busy. It is
labelled `is_estimate=True`: every consumer must mark its numbers "estimated".
`null`: no power at all; `read()` returns an empty mapping.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from device_runners.errors import PowerSourceError
from device_runners.power.base import PowerSource, read_text, register_power_source


def count_cpus(text: str) -> int:
    """Number of CPUs: the per-CPU `cpuN` lines of /proc/stat (os.cpu_count() when a
    /proc/stat has only the aggregate `cpu` line)."""
    lines = [line.split()[0] for line in text.splitlines() if line.startswith("cpu")]
    n = sum(1 for name in lines if name[3:].isdigit())
    if n:
        return n
    if "cpu" in lines:
        return os.cpu_count() or 1
    raise PowerSourceError("estimated: /proc/stat has no 'cpu' lines; is /proc mounted?")


@register_power_source
class EstimatedPower(PowerSource):
    """Linear idle-to-max power model driven by the runner process's own CPU time."""

    name = "estimated"
    is_estimate = True

    def __init__(self, root: str = "/", *, profile: Any = None,
                 idle_power_mw: float | None = None, max_power_mw: float | None = None,
                 update_period_ms: float | None = None,
                 cpu_time_ns: Callable[[], int] = time.process_time_ns,
                 wall_time_ns: Callable[[], int] = time.monotonic_ns, **kwargs: Any) -> None:
        super().__init__(root, update_period_ms=update_period_ms or 100.0, **kwargs)
        if profile is not None:
            idle_power_mw = profile.idle_power_mw if idle_power_mw is None else idle_power_mw
            max_power_mw = profile.max_power_mw if max_power_mw is None else max_power_mw
        if idle_power_mw is None or max_power_mw is None:
            raise PowerSourceError("estimated power needs a hardware profile (--profile NAME) "
                                   "or idle_power_mw and max_power_mw")
        self.idle_power_mw = float(idle_power_mw)
        self.max_power_mw = float(max_power_mw)
        self.profile_name = getattr(profile, "name", None)
        self._cpu_time_ns, self._wall_time_ns = cpu_time_ns, wall_time_ns
        self._last: tuple[int, int] = (0, 0)
        self.n_cpus = 1
        self.last_utilisation = 0.0

    def _times(self) -> tuple[int, int]:
        return self._cpu_time_ns(), self._wall_time_ns()

    def open(self) -> None:
        self.n_cpus = count_cpus(read_text(self.root / "proc/stat", self.name))
        self._last = self._times()
        self.total_rails = ("estimated_total",)
        self.caveats = [
            f"ESTIMATED, not measured: idle {self.idle_power_mw:.0f} mW + this process's CPU "
            f"share of {self.n_cpus} CPU(s) x ({self.max_power_mw:.0f} - "
            f"{self.idle_power_mw:.0f}) mW from profile {self.profile_name or '<given numbers>'}"
            "; accelerator load is not seen"
        ]
        self.is_open = True

    def read(self) -> dict[str, float]:
        cpu, wall = self._times()
        d_cpu, d_wall = cpu - self._last[0], wall - self._last[1]
        if d_wall > 0:
            self.last_utilisation = min(max(d_cpu / (d_wall * self.n_cpus), 0.0), 1.0)
            self._last = (cpu, wall)
        span_mw = self.max_power_mw - self.idle_power_mw
        power = self.idle_power_mw + self.last_utilisation * span_mw
        return {"estimated_total": power}

    def describe(self) -> dict[str, Any]:
        data = super().describe()
        data.update(idle_power_mw=self.idle_power_mw, max_power_mw=self.max_power_mw,
                    profile=self.profile_name, n_cpus=self.n_cpus)
        return data


@register_power_source
class NullPower(PowerSource):
    """No power measurement (latency-only runs)."""

    name = "null"

    def open(self) -> None:
        self.caveats = ["no power source: latency only"]
        self.is_open = True

    def read(self) -> dict[str, float]:
        return {}
