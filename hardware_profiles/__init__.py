"""Hardware profiles: one YAML per device and power mode.

Each file describes a device's CPU, accelerator, peak throughput per precision,
memory bandwidth, idle/max power, power sensors, power-mode check, thermal limits and
how to recognise the device. `device_runners.profiles` holds the schema and the loader.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

PROFILE_DIR = Path(__file__).parent


def profile_files() -> Traversable:
    """The shipped profiles as a resource folder (works inside a zipapp too)."""
    return resources.files(__name__)


def list_profiles() -> list[str]:
    """Names of the shipped profiles (file stems), sorted."""
    return sorted(p.name[:-5] for p in profile_files().iterdir() if p.name.endswith(".yaml"))
