"""Power estimated from a hardware profile, and the `null` source for latency-only runs.

`estimated`: power_mw = idle_power_mw + utilisation × (max_power_mw − idle_power_mw),
with CPU utilisation from the change in `/proc/stat` CPU times between reads. It is
labelled `is_estimate=True`: every consumer must mark its numbers "estimated".
`null`: no power at all; `read()` returns an empty mapping.
"""

from __future__ import annotations

from typing import Any

from device_runners.errors import PowerSourceError
from device_runners.power.base import PowerSource, read_text, register_power_source


def read_cpu_times(text: str) -> tuple[int, int]:
    """(busy, total) jiffies from the aggregate `cpu` line of /proc/stat."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(v) for v in parts[1:9]]  # user..steal; guest is inside user
            values += [0] * (8 - len(values))
            idle = values[3] + values[4]  # idle + iowait
            total = sum(values)
            return total - idle, total
    raise PowerSourceError("estimated: /proc/stat has no aggregate 'cpu' line; is /proc mounted?")


@register_power_source
class EstimatedPower(PowerSource):
    """Linear idle-to-max power model driven by CPU utilisation."""

    name = "estimated"
    is_estimate = True

    def __init__(self, root: str = "/", *, profile: Any = None,
                 idle_power_mw: float | None = None, max_power_mw: float | None = None,
                 update_period_ms: float | None = None, **kwargs: Any) -> None:
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
        self._last: tuple[int, int] = (0, 0)
        self.last_utilisation = 0.0

    def _times(self) -> tuple[int, int]:
        return read_cpu_times(read_text(self.root / "proc/stat", self.name))

    def open(self) -> None:
        self._last = self._times()
        self.total_rails = ("estimated_total",)
        self.caveats = [
            f"ESTIMATED, not measured: idle {self.idle_power_mw:.0f} mW + CPU utilisation x "
            f"({self.max_power_mw:.0f} - {self.idle_power_mw:.0f}) mW from profile "
            f"{self.profile_name or '<given numbers>'}; accelerator load is not seen"
        ]
        self.is_open = True

    def read(self) -> dict[str, float]:
        busy, total = self._times()
        d_busy, d_total = busy - self._last[0], total - self._last[1]
        if d_total > 0:
            self.last_utilisation = min(max(d_busy / d_total, 0.0), 1.0)
            self._last = (busy, total)
        span_mw = self.max_power_mw - self.idle_power_mw
        power = self.idle_power_mw + self.last_utilisation * span_mw
        return {"estimated_total": power}

    def describe(self) -> dict[str, Any]:
        data = super().describe()
        data.update(idle_power_mw=self.idle_power_mw, max_power_mw=self.max_power_mw,
                    profile=self.profile_name)
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
