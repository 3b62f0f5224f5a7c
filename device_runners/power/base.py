"""The power-source interface, its registry and small sysfs helpers.

Every power source is a small class with `open()`, `read() -> {rail: power_mw}`,
`close()`, a registered `name`, an `update_period_ms` (how often the sensor itself
refreshes) and `is_estimate`. Sources read files under a `root` given to the
constructor (default "/"), so tests point them at a fake sysfs tree. A source raises
`PowerSourceError` (never a bare OSError) when it cannot be found or read.
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from device_runners.errors import PowerSourceError

POWER_SOURCES: dict[str, type[PowerSource]] = {}


def register_power_source(cls: type[PowerSource]) -> type[PowerSource]:
    """Class decorator: make `cls` available under `cls.name`."""
    if not cls.name or cls.name in POWER_SOURCES:
        raise ValueError(f"power source name {cls.name!r} is empty or already registered")
    POWER_SOURCES[cls.name] = cls
    return cls


def available_power_sources() -> list[str]:
    return sorted(POWER_SOURCES)


def create_power_source(name: str, **options: Any) -> PowerSource:
    """Build the source registered as `name` with its constructor options."""
    try:
        cls = POWER_SOURCES[name]
    except KeyError:
        raise PowerSourceError(
            f"unknown power source '{name}'; choose one of: {', '.join(available_power_sources())}"
        ) from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise PowerSourceError(f"bad options for power source '{name}': {exc}") from exc


class PowerSource:
    """Base class: one power sensor (or estimator) with a uniform interface."""

    name: ClassVar[str] = ""
    is_estimate: ClassVar[bool] = False
    #: True when samples come from a log read after the run (`load_samples`), not live.
    post_hoc: ClassVar[bool] = False

    def __init__(self, root: str | os.PathLike[str] = "/", *, paths: Sequence[str] = (),
                 labels: Sequence[str] = (), board_total_rail: str | None = None,
                 update_period_ms: float | None = None) -> None:
        self.root = Path(root)
        self.paths = tuple(paths)
        self.labels = tuple(labels)
        self.board_total_rail = board_total_rail
        self.update_period_ms: float = float(update_period_ms or 10.0)
        self._explicit_period = update_period_ms is not None
        self.total_rails: tuple[str, ...] = ()
        self.caveats: list[str] = []
        self.is_open = False

    # -- interface ---------------------------------------------------------------------
    def open(self) -> None:
        """Find the sensor; raise PowerSourceError with a fix when it is not there."""
        self.is_open = True

    def read(self) -> dict[str, float]:
        """One reading: rail name -> power in mW."""
        raise NotImplementedError

    def close(self) -> None:
        self.is_open = False

    # -- helpers shared by all sources -------------------------------------------------
    def total_mw(self, reading: Mapping[str, float]) -> float | None:
        """Total power of one reading: the board-total rail alone, never nested rails added."""
        if not reading:
            return None
        rails = self.total_rails or tuple(reading)
        values = [reading[r] for r in rails if r in reading]
        return float(sum(values)) if values else None

    def describe(self) -> dict[str, Any]:
        """Metadata for results.json: name, estimate flag, rails, total rule, caveats."""
        return {
            "name": self.name,
            "is_estimate": self.is_estimate,
            "label": "estimated" if self.is_estimate else "measured",
            "update_period_ms": self.update_period_ms,
            "board_total_rail": self.board_total_rail,
            "total_rails": list(self.total_rails),
            "caveats": list(self.caveats),
        }

    def _select_total(self, rails: Sequence[str], known_totals: Sequence[str]) -> None:
        """Set `total_rails`: the configured or a known board-total rail, else all rails."""
        wanted = [self.board_total_rail] if self.board_total_rail else list(known_totals)
        for rail in wanted:
            if rail in rails:
                self.board_total_rail = rail
                self.total_rails = (rail,)
                return
        if len(rails) == 1 and not self.board_total_rail:
            self.total_rails = tuple(rails)
            return
        if self.board_total_rail:
            raise PowerSourceError(
                f"{self.name}: board-total rail '{self.board_total_rail}' not found; rails "
                f"present: {', '.join(rails)}. Fix board_total_rail in the profile"
            )
        self.total_rails = tuple(rails)
        self.caveats.append(
            f"no board-total rail ({'/'.join(known_totals) or 'none known'}) found: the total is "
            f"the sum of {', '.join(rails)} and may miss parts of the board"
        )

    def _globs(self, defaults: Sequence[str]) -> list[Path]:
        found: list[Path] = []
        for pattern in self.paths or defaults:
            found.extend(Path(p) for p in sorted(glob.glob(str(self.root / pattern))))
        return found

    def __enter__(self) -> PowerSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_text(path: Path, source: str) -> str:
    """Read a sysfs file, turning OSErrors into PowerSourceErrors that say how to fix them."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except PermissionError as exc:
        raise PowerSourceError(
            f"{source}: permission denied reading {path}; run edge-ee-run as root (sudo) or "
            f"make it readable: sudo chmod o+r {path}"
        ) from exc
    except FileNotFoundError as exc:
        raise PowerSourceError(
            f"{source}: {path} disappeared (sensor unplugged or driver unloaded); "
            "check the sensor or use another --power-source"
        ) from exc
    except OSError as exc:
        raise PowerSourceError(f"{source}: cannot read {path}: {exc}; check the sensor") from exc


def read_number(path: Path, source: str) -> float:
    text = read_text(path, source)
    try:
        value = float(text)
    except ValueError:
        raise PowerSourceError(f"{source}: {path} holds {text!r}, not a number; "
                               "is this the right sensor file?") from None
    if not math.isfinite(value):
        raise PowerSourceError(f"{source}: {path} holds {text!r}, not a finite number; "
                               "is this the right sensor file?")
    return value


def run_tool(argv: Sequence[str], source: str, timeout_s: float = 5.0,
             which: Callable[[str], str | None] = shutil.which) -> str:
    """Run a helper tool (e.g. vcgencmd) and return stdout; PowerSourceError when it fails."""
    exe = which(argv[0])
    if exe is None:
        raise PowerSourceError(f"{source}: '{argv[0]}' not found on PATH; install it or choose "
                               "another --power-source")
    try:
        proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PowerSourceError(f"{source}: running {' '.join(argv)} failed: {exc}") from exc
    if proc.returncode != 0:
        raise PowerSourceError(f"{source}: {' '.join(argv)} exited {proc.returncode}: "
                               f"{(proc.stderr or proc.stdout).strip()[:200]}")
    return proc.stdout
