"""INA219 / INA226 current/power monitors on the Linux hwmon interface.

Any `/sys/class/hwmon/hwmon*/` whose `name` is `ina219`, `ina226` (or another chip
of the `ina2xx` driver) is one rail, labelled by its `label` file when present,
else `<chip>@<hwmonN>`. Power comes from `power1_input` (µW) or, when that is
missing, from the bus voltage `in1_input` (mV) × `curr1_input` (mA) (`in0` is the
shunt voltage in this driver). Use this for a sensor wired into a board's 5 V input.
"""

from __future__ import annotations

from pathlib import Path

from device_runners.errors import PowerSourceError
from device_runners.power.base import PowerSource, read_number, read_text, register_power_source

INA2XX_CHIPS = ("ina219", "ina220", "ina226", "ina230", "ina231", "ina260")


@register_power_source
class Ina2xxHwmon(PowerSource):
    """INA219/INA226 via hwmon: one rail per chip."""

    name = "ina2xx_hwmon"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._rails: dict[str, tuple[Path, ...]] = {}

    def open(self) -> None:
        self.caveats = []
        rails: dict[str, tuple[Path, ...]] = {}
        periods: list[float] = []
        for d in self._globs(("sys/class/hwmon/hwmon*",)):
            name_file = d / "name"
            if not name_file.exists():
                continue
            chip = read_text(name_file, self.name)
            if chip not in INA2XX_CHIPS:
                continue
            label = f"{chip}@{d.name}"
            if (d / "label").exists():
                label = read_text(d / "label", self.name)
            if (d / "power1_input").exists():
                rails[label] = (d / "power1_input",)
            elif (d / "in1_input").exists() and (d / "curr1_input").exists():
                rails[label] = (d / "in1_input", d / "curr1_input")
            else:
                continue
            if (d / "update_interval").exists():
                periods.append(read_number(d / "update_interval", self.name))
        if self.labels:
            rails = {r: p for r, p in rails.items() if r in self.labels}
        if not rails:
            raise PowerSourceError(
                f"ina2xx_hwmon: no INA219/INA226 under {self.root / 'sys/class/hwmon'}; wire the "
                "sensor, enable its device-tree overlay (e.g. dtoverlay=i2c-sensor,ina219) or "
                "choose another --power-source"
            )
        self._rails = rails
        if periods and not self._explicit_period:
            self.update_period_ms = max(periods)
        self._select_total(list(rails), ())
        self.is_open = True

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for rail, files in self._rails.items():
            if len(files) == 1:
                out[rail] = read_number(files[0], self.name) / 1000.0  # µW -> mW
            else:
                volt_mv, curr_ma = (read_number(f, self.name) for f in files)
                out[rail] = volt_mv * curr_ma / 1000.0
        return out
