"""Power sources, the background sampler and energy accounting for device runs.

Import a source by registry name with `create_power_source(name, root=..., ...)`, or let
`choose_power_source(profile, "auto")` pick one with a fallback that never fails a run.
Importing this package registers every built-in source.
"""

from __future__ import annotations

from device_runners.power.base import (
    POWER_SOURCES,
    PowerSource,
    available_power_sources,
    create_power_source,
    register_power_source,
)
from device_runners.power.estimated import EstimatedPower, NullPower
from device_runners.power.ina2xx import Ina2xxHwmon
from device_runners.power.jetson import JetsonIna3221Hwmon, JetsonIna3221Iio
from device_runners.power.meter_csv import UsbMeterCsv
from device_runners.power.rapl import Rapl
from device_runners.power.rpi import RaspberryPi5Pmic

__all__ = [
    "POWER_SOURCES",
    "EstimatedPower",
    "Ina2xxHwmon",
    "JetsonIna3221Hwmon",
    "JetsonIna3221Iio",
    "NullPower",
    "PowerSource",
    "Rapl",
    "RaspberryPi5Pmic",
    "UsbMeterCsv",
    "available_power_sources",
    "create_power_source",
    "register_power_source",
]
