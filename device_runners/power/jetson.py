"""Jetson on-module INA3221 power monitors, in both sysfs layouts.

- JetPack 4 (L4T R32, `ina3221x` IIO driver):
  `/sys/bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_N` and `in_powerN_input` (mW).
- JetPack 5/6 (L4T R35/R36, mainline `ina3221` hwmon driver):
  `/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/inN_label`, `inN_input` (mV) and
  `currN_input` (mA); power = V·I. The "sum of shunt voltages" channel is skipped.

Rails are named by their label. `VDD_IN` (Orin) / `POM_5V_IN` (Nano) is the module's
input power, so the total is that rail alone: the CPU/GPU/SOC rails are nested in it.
"""

from __future__ import annotations

import re
from pathlib import Path

from device_runners.errors import PowerSourceError
from device_runners.power.base import PowerSource, read_number, read_text, register_power_source

BOARD_TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
_MODULE_CAVEAT = ("the board-total rail is the module input (VDD_IN / POM_5V_IN); "
                  "carrier-board peripherals are not included")


class _Ina3221(PowerSource):
    default_globs: tuple[str, ...] = ()

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._files: dict[str, tuple[Path, ...]] = {}

    def _discover(self, device_dir: Path) -> dict[str, tuple[Path, ...]]:
        raise NotImplementedError

    def open(self) -> None:
        self.caveats = []
        dirs = [d for d in self._globs(self.default_globs) if d.is_dir()]
        if not dirs:
            raise PowerSourceError(
                f"{self.name}: no INA3221 found under {self.root} "
                f"({', '.join(self.paths or self.default_globs)}); this is not a Jetson with "
                "this JetPack layout: try --power-source auto"
            )
        files: dict[str, tuple[Path, ...]] = {}
        for d in dirs:
            for rail, paths in self._discover(d).items():
                if rail in files:
                    rail = f"{rail}@{d.name}"
                files[rail] = paths
        if self.labels:
            missing = [r for r in self.labels if r not in files]
            files = {r: p for r, p in files.items() if r in self.labels}
            if missing:
                self.caveats.append(f"rails listed in the profile but absent: {', '.join(missing)}")
        if not files:
            raise PowerSourceError(
                f"{self.name}: INA3221 found in {', '.join(map(str, dirs))} but no rail "
                f"matches {', '.join(self.labels) or 'any label'}; fix the profile's labels"
            )
        self._files = files
        self._select_total(list(files), BOARD_TOTAL_RAILS)
        if self.board_total_rail in BOARD_TOTAL_RAILS:
            self.caveats.append(_MODULE_CAVEAT)
        self.is_open = True

    def describe(self) -> dict[str, object]:
        data = super().describe()
        data["rails"] = list(self._files)
        return data


@register_power_source
class JetsonIna3221Iio(_Ina3221):
    """JetPack 4 layout: `rail_name_N` + `in_powerN_input` in mW."""

    name = "ina3221_iio"
    default_globs = ("sys/bus/i2c/drivers/ina3221x/*/iio:device*",)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._assumed_period = not self._explicit_period
        if self._assumed_period:
            self.update_period_ms = 20.0  # the driver has no update_interval file

    def _discover(self, device_dir: Path) -> dict[str, tuple[Path, ...]]:
        rails: dict[str, tuple[Path, ...]] = {}
        for name_file in sorted(device_dir.glob("rail_name_*")):
            n = name_file.name.rsplit("_", 1)[1]
            power = device_dir / f"in_power{n}_input"
            if power.exists():
                rails[read_text(name_file, self.name)] = (power,)
        return rails

    def open(self) -> None:
        super().open()
        if self._assumed_period:
            self.caveats.append("update period of 20 ms assumed (the driver does not report it)")

    def read(self) -> dict[str, float]:
        return {rail: read_number(p[0], self.name) for rail, p in self._files.items()}


@register_power_source
class JetsonIna3221Hwmon(_Ina3221):
    """JetPack 5/6 layout: `inN_label`, `inN_input` (mV) × `currN_input` (mA)."""

    name = "ina3221_hwmon"
    default_globs = ("sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*",)

    def _discover(self, device_dir: Path) -> dict[str, tuple[Path, ...]]:
        rails: dict[str, tuple[Path, ...]] = {}
        for label_file in sorted(device_dir.glob("in*_label")):
            m = re.fullmatch(r"in(\d+)_label", label_file.name)
            if not m:
                continue
            label = read_text(label_file, self.name)
            if "sum of shunt" in label.lower():
                continue  # in7: sum of shunt voltages, not a rail
            volt, curr = device_dir / f"in{m[1]}_input", device_dir / f"curr{m[1]}_input"
            if volt.exists() and curr.exists():
                rails[label] = (volt, curr)
        interval = device_dir / "update_interval"
        if not self._explicit_period and interval.exists():
            self.update_period_ms = read_number(interval, self.name)
        return rails

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for rail, (volt, curr) in self._files.items():
            out[rail] = read_number(volt, self.name) * read_number(curr, self.name) / 1000.0
        return out
