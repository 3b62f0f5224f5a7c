"""Intel/AMD RAPL energy counters from the Linux powercap interface.

`/sys/class/powercap/intel-rapl:N[:M]/energy_uj` are cumulative energy counters in µJ
that wrap at `max_energy_range_uj`. Power is Δenergy/Δt between two reads (the first
read after `open()` covers the time since `open()`). The total is `psys` (platform)
when present, else the sum of the top-level zones (packages); sub-zones (core, uncore,
dram) are reported as rails but never added. Since Linux 5.10 the counters are
readable by root only: reading them as a user raises a PowerSourceError saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from device_runners.errors import PowerSourceError
from device_runners.power.base import PowerSource, read_number, read_text, register_power_source


@register_power_source
class Rapl(PowerSource):
    """RAPL package/psys energy counters turned into power."""

    name = "rapl"

    def __init__(self, *args: object, clock_ns: Callable[[], int] = time.monotonic_ns,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if not self._explicit_period:
            self.update_period_ms = 1.0  # counters refresh about every millisecond
        self._clock_ns = clock_ns
        self._zones: dict[str, tuple[Path, float]] = {}
        self._last: dict[str, float] = {}
        self._last_ns = 0

    def open(self) -> None:
        self.caveats = []
        zones: dict[str, tuple[Path, float]] = {}
        top: list[str] = []
        for d in self._globs(("sys/class/powercap/intel-rapl:*",)):
            if not (d / "energy_uj").exists():
                continue
            zone_name = read_text(d / "name", self.name) if (d / "name").exists() else d.name
            parent = d.name.split(":")
            if len(parent) > 2:  # sub-zone intel-rapl:N:M
                pname = read_text(d.parent / ":".join(parent[:2]) / "name", self.name) \
                    if (d.parent / ":".join(parent[:2]) / "name").exists() else ":".join(parent[:2])
                zone_name = f"{pname}/{zone_name}"
            else:
                top.append(zone_name)
            max_range = d / "max_energy_range_uj"
            wrap = read_number(max_range, self.name) if max_range.exists() else 2.0**32
            zones[zone_name] = (d / "energy_uj", wrap)
        if not zones:
            raise PowerSourceError(
                f"rapl: no RAPL zones under {self.root / 'sys/class/powercap'}; load the "
                "intel_rapl_common / intel_rapl_msr module (modprobe) or this CPU has no RAPL"
            )
        if self.labels:
            zones = {z: v for z, v in zones.items() if z in self.labels}
        self._zones = zones
        totals = ["psys"] if "psys" in top else [z for z in top if z in zones]
        if self.board_total_rail:
            self._select_total(list(zones), ())
        else:
            self.total_rails = tuple(totals)
            self.board_total_rail = "psys" if totals == ["psys"] else None
            self.caveats.append("RAPL covers the CPU package(s)" + (" and platform (psys)"
                                if totals == ["psys"] else "; memory, disks and board are not "
                                "included unless a psys zone exists"))
        self._last = self._energies()
        self._last_ns = self._clock_ns()
        self.is_open = True

    def _energies(self) -> dict[str, float]:
        return {z: read_number(path, self.name) for z, (path, _) in self._zones.items()}

    def read(self) -> dict[str, float]:
        now_ns = self._clock_ns()
        energies = self._energies()
        dt_ns = now_ns - self._last_ns
        if dt_ns <= 0:
            raise PowerSourceError("rapl: two reads at the same instant; sample less often")
        out: dict[str, float] = {}
        for zone, value in energies.items():
            delta = value - self._last[zone]
            if delta < 0:  # the counter wrapped at max_energy_range_uj
                delta += self._zones[zone][1]
            out[zone] = delta * 1e6 / dt_ns  # µJ/ns * 1e6 = mW
        self._last, self._last_ns = energies, now_ns
        return out
