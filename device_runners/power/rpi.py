"""Raspberry Pi 5 PMIC rails via `vcgencmd pmic_read_adc`.

The Pi 5 PMIC reports, per rail, a current and a voltage on separate lines::

    VDD_CORE_A current(7)=1.42880000A
    VDD_CORE_V volt(15)=0.90660000V

Current and voltage are paired by rail name (the `_A` / `_V` suffix removed) and
power = V·I. `EXT5V` (the 5 V input) has a voltage but no current, so the sum of the
PMIC rails understates the board's input power (no USB/peripheral load, no conversion
losses); that caveat is recorded in the source's metadata.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from device_runners.errors import PowerSourceError
from device_runners.power.base import PowerSource, register_power_source, run_tool

_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(current|volt)\((\d+)\)=([-+0-9.eE]+)[AV]\s*$")
UNDERSTATES_CAVEAT = (
    "sum of the PMIC rails: EXT5V has no current sense, so the total understates the "
    "board's input power (USB/peripheral load and PMIC conversion losses are missing)"
)


def parse_pmic_read_adc(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """Parse `vcgencmd pmic_read_adc` output into ({rail: power_mw}, {rail: voltage_mv})."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        rail, kind, value = m[1], m[3], float(m[5])
        (amps if kind == "current" else volts)[rail] = value
    power = {r: volts[r] * amps[r] * 1000.0 for r in amps if r in volts}
    return power, {r: v * 1000.0 for r, v in volts.items()}


@register_power_source
class RaspberryPi5Pmic(PowerSource):
    """Pi 5 PMIC ADC rails (runs vcgencmd once per read)."""

    name = "rpi5_pmic"

    def __init__(self, root: str = "/", *, vcgencmd: str = "vcgencmd",
                 labels: Sequence[str] = (), board_total_rail: str | None = None,
                 update_period_ms: float | None = None, paths: Sequence[str] = ()) -> None:
        super().__init__(root, paths=paths, labels=labels, board_total_rail=board_total_rail,
                         update_period_ms=update_period_ms or 100.0)
        self.vcgencmd = vcgencmd
        self.last_voltages_mv: dict[str, float] = {}

    def _query(self) -> dict[str, float]:
        out = run_tool([self.vcgencmd, "pmic_read_adc"], self.name)
        power, volts = parse_pmic_read_adc(out)
        if not power:
            raise PowerSourceError(
                f"{self.name}: `vcgencmd pmic_read_adc` printed no current/voltage pairs "
                f"({out.strip()[:120]!r}); this works on a Raspberry Pi 5 with current firmware "
                "only: update it (sudo rpi-eeprom-update) or choose another --power-source"
            )
        self.last_voltages_mv = volts
        if self.labels:
            power = {r: p for r, p in power.items() if r in self.labels}
        return power

    def open(self) -> None:
        rails = list(self._query())
        self.caveats = []
        if self.board_total_rail:
            self._select_total(rails, ())
        else:
            self.total_rails = tuple(rails)
            self.caveats.append(UNDERSTATES_CAVEAT)
        self.is_open = True

    def read(self) -> dict[str, float]:
        return self._query()

    def describe(self) -> dict[str, object]:
        data = super().describe()
        if "EXT5V" in self.last_voltages_mv:
            data["ext5v_voltage_mv"] = self.last_voltages_mv["EXT5V"]
        return data
