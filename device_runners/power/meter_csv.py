"""An external USB power meter's CSV log, aligned to the run by timestamps.

Meters such as the UM25C/UM34C (rdumtool), FNIRSI or a lab supply log rows with a
timestamp and either a power column or a voltage and a current column. Column units
come from the header (`power_w`, `Power (mW)`, `voltage_v`, `current_ma`, ...; a name
is normalised to lower case with non-alphanumerics as `_`); a column without a unit is
rejected unless its unit is given. Timestamps may be numbers (`timestamp_s`, `_ms`,
`_ns`; a bare `timestamp`/`time` is seconds) or ISO 8601 strings.

Wall-clock timestamps are mapped onto this machine's monotonic clock (the one the
sampler and the benchmark use) and `clock_offset_ms` (meter clock minus this machine's
clock) corrects a meter whose clock is off. Every reading must be finite and non-negative
and rows must be in time order (a log out of order is an error, never silently
re-sorted). The log is read after the run (`load_samples`); `read()` returns the newest
row so a live log also works.
"""

from __future__ import annotations

import csv
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from device_runners.errors import PowerSourceError
from device_runners.power.base import PowerSource, register_power_source

#: unit suffix -> factor to mW (power), mV (voltage), mA (current), ns (time)
_POWER = {"w": 1000.0, "mw": 1.0, "uw": 0.001}
_VOLT = {"v": 1000.0, "mv": 1.0}
_CURR = {"a": 1000.0, "ma": 1.0, "ua": 0.001}
_TIME = {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}


def _quantity(text: str | None, what: str) -> float:
    """A meter reading: finite and >= 0 (a negative or NaN power would corrupt energy)."""
    value = float(text)  # type: ignore[arg-type]  # None -> TypeError, reported per row
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} {text!r} is not a finite, non-negative number")
    return value


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def _find(columns: list[str], stems: tuple[str, ...], units: dict[str, float],
          bare_unit: str | None = None) -> tuple[str, float] | None:
    for col in columns:
        n = _norm(col)
        for stem in stems:
            for unit, factor in units.items():
                if n in (f"{stem}_{unit}", f"{stem}{unit}"):
                    return col, factor
            if n == stem and bare_unit is not None:
                return col, units[bare_unit]
    return None


@dataclass(frozen=True)
class MeterCsvConfig:
    """How to read one meter log. Column names are the header's, before normalising."""

    csv_path: str
    clock_offset_ms: float = 0.0
    timestamps_are_wall_clock: bool = True
    timestamp_column: str | None = None
    power_column: str | None = None
    power_unit: str | None = None  # "w" / "mw" when the header has no unit


@register_power_source
class UsbMeterCsv(PowerSource):
    """Power samples from an external meter's CSV log."""

    name = "usb_meter_csv"
    post_hoc = True

    def __init__(self, root: str = "/", *, csv_path: str | None = None,
                 clock_offset_ms: float = 0.0, timestamps_are_wall_clock: bool = True,
                 timestamp_column: str | None = None, power_column: str | None = None,
                 power_unit: str | None = None, update_period_ms: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(root, update_period_ms=update_period_ms, **kwargs)
        if isinstance(clock_offset_ms, bool) or not isinstance(clock_offset_ms, (int, float)) \
                or not math.isfinite(clock_offset_ms):
            raise PowerSourceError(f"usb_meter_csv: clock_offset_ms must be a finite number of "
                                   f"milliseconds, got {clock_offset_ms!r}")
        if not csv_path:
            raise PowerSourceError("usb_meter_csv needs the meter log: pass csv_path=PATH "
                                   "(--power-csv PATH)")
        self.config = MeterCsvConfig(str(csv_path), float(clock_offset_ms),
                                     timestamps_are_wall_clock, timestamp_column, power_column,
                                     power_unit)
        self._wall_to_mono_ns = 0

    def _rows(self) -> list[tuple[int, float]]:
        path = Path(self.config.csv_path)
        try:
            if not path.is_file():
                raise PowerSourceError(f"usb_meter_csv: {path} is not a file; pass the meter's "
                                       "CSV log to --meter-csv")
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                cols = [c for c in (reader.fieldnames or []) if c is not None]
                rows = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise PowerSourceError(
                f"usb_meter_csv: cannot read {path} as a UTF-8 CSV log ({exc}); check the path "
                "and export the meter log as CSV") from exc
        ts = self._time_column(cols)
        power = self._power_columns(cols)
        out: list[tuple[int, float]] = []
        for i, row in enumerate(rows, start=2):
            try:
                t_ns = self._parse_time(row[ts[0]], ts[1])
                if len(power) == 2:
                    p_mw = _quantity(row[power[0]], "power") * power[1]
                else:
                    volt_mv = _quantity(row[power[0]], "voltage") * power[1]
                    p_mw = volt_mv * _quantity(row[power[2]], "current") * power[3] / 1000.0
            except (ValueError, TypeError, OverflowError, OSError) as exc:
                raise PowerSourceError(f"usb_meter_csv: {path} line {i} is malformed ({exc}); "
                                       "fix or delete that row") from exc
            if out and t_ns < out[-1][0]:
                raise PowerSourceError(
                    f"usb_meter_csv: {path} line {i} is earlier than the row before it (rows out "
                    "of time order); the log is not one recording — sort it by time yourself "
                    "if that is right, or cut it to the run")
            out.append((t_ns, p_mw))
        if not out:
            raise PowerSourceError(
                f"usb_meter_csv: {path} has no data rows; was the meter logging?")
        return out

    def _time_column(self, cols: list[str]) -> tuple[str, float | None]:
        if self.config.timestamp_column:
            if self.config.timestamp_column not in cols:
                raise PowerSourceError(f"usb_meter_csv: no column '{self.config.timestamp_column}'"
                                       f" in {self.config.csv_path}; columns: {', '.join(cols)}")
            n = _norm(self.config.timestamp_column)
            unit = n.rsplit("_", 1)[-1] if "_" in n else "s"
            return self.config.timestamp_column, _TIME.get(unit, 1e9)
        found = _find(cols, ("timestamp", "time", "unix_time", "epoch"), _TIME, bare_unit="s")
        if found:
            return found
        for col in cols:
            if _norm(col) in ("datetime", "date_time", "date"):
                return col, None  # ISO 8601 strings
        raise PowerSourceError(
            f"usb_meter_csv: no timestamp column in {self.config.csv_path} (columns: "
            f"{', '.join(cols)}); name it timestamp_s / timestamp_ms or pass timestamp_column"
        )

    def _power_columns(self, cols: list[str]) -> tuple[Any, ...]:
        if self.config.power_column:
            unit = self.config.power_unit or _norm(self.config.power_column).rsplit("_", 1)[-1]
            if self.config.power_column not in cols or unit not in _POWER:
                raise PowerSourceError(
                    f"usb_meter_csv: power column '{self.config.power_column}' missing or without "
                    f"unit; columns: {', '.join(cols)}; pass power_unit='w' or 'mw'")
            return self.config.power_column, _POWER[unit]
        found = _find(cols, ("power", "p"), _POWER)
        if found:
            return found
        volt = _find(cols, ("voltage", "vbus", "v"), _VOLT)
        curr = _find(cols, ("current", "ibus", "i"), _CURR)
        if volt and curr:
            return (volt[0], volt[1], curr[0], curr[1])
        raise PowerSourceError(
            f"usb_meter_csv: no power column with a unit in {self.config.csv_path} (columns: "
            f"{', '.join(cols)}); name it power_w / power_mw, or voltage_v + current_a, "
            "or pass power_column and power_unit"
        )

    @staticmethod
    def _parse_time(text: str, factor: float | None) -> int:
        if factor is None:
            return int(datetime.fromisoformat(text.strip()).timestamp() * 1e9)
        value = float(text)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"timestamp {text!r} is not a finite, non-negative number")
        return round(value * factor)

    def open(self) -> None:
        self._wall_to_mono_ns = time.monotonic_ns() - time.time_ns()
        rows = self._rows()
        if not self._explicit_period and len(rows) > 1:
            span = rows[-1][0] - rows[0][0]
            self.update_period_ms = max(span / (len(rows) - 1) / 1e6, 1.0)
        self.total_rails = ("meter",)
        self.caveats = ["external meter: measures everything behind it (board, USB devices); "
                        "timestamps aligned with a clock offset of "
                        f"{self.config.clock_offset_ms} ms"]
        self.is_open = True

    def _align(self, t_ns: int) -> int:
        base = t_ns + (self._wall_to_mono_ns if self.config.timestamps_are_wall_clock else 0)
        return base - round(self.config.clock_offset_ms * 1e6)

    def read(self) -> dict[str, float]:
        return {"meter": self._rows()[-1][1]}

    def load_samples(self, start_ns: int | None = None,
                     end_ns: int | None = None) -> list[tuple[int, float]]:
        """Rows as (timestamp_ns on this machine's monotonic clock, power_mw), in a window."""
        rows = sorted((self._align(t), p) for t, p in self._rows())
        return [(t, p) for t, p in rows
                if (start_ns is None or t >= start_ns) and (end_ns is None or t <= end_ns)]
