"""Background-thread power sampler with monotonic timestamps.

`PowerSampler(source, period_ms)` reads the source every `period_ms` on a daemon thread
(deadline-scheduled, so it does not drift), stamping each sample with
`time.monotonic_ns()` — the same clock as the benchmark windows. Samples stay in
memory. A read that fails (sensor unplugged, file gone) does not stop the thread or the
run: the sample carries the error, the span without data is kept as an error window, and
the caller decides whether to fall back (`healthy`, `error_windows`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device_runners.errors import EdgeEEError
from device_runners.power.base import PowerSource


@dataclass(frozen=True)
class PowerSample:
    timestamp_ns: int
    total_mw: float | None
    rails_mw: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None


class PowerSampler:
    """Samples `source` in a background thread between `start()` and `stop()`."""

    def __init__(self, source: PowerSource, period_ms: float | None = None, *,
                 clock_ns: Callable[[], int] = time.monotonic_ns,
                 max_samples: int = 2_000_000) -> None:
        self.source = source
        self.period_ms = float(period_ms if period_ms else max(source.update_period_ms, 10.0))
        if self.period_ms <= 0:
            raise EdgeEEError(f"sampling period must be > 0 ms, got {self.period_ms}")
        self._clock_ns = clock_ns
        self._max_samples = max_samples
        self._samples: list[PowerSample] = []
        self._markers: list[tuple[str, int]] = []
        self._error_windows: list[tuple[int, int]] = []
        self._error_start: int | None = None
        self._last_error_ns = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._opened_here = False

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> PowerSampler:
        if self._thread is not None:
            raise EdgeEEError("sampler already started; create a new PowerSampler per run")
        if not self.source.is_open:
            self.source.open()
            self._opened_here = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="edge-ee-power", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=max(5.0, 5 * self.period_ms / 1000.0))
        if self._error_start is not None:
            self._error_windows.append((self._error_start, self._last_error_ns))
            self._error_start = None
        if self._opened_here:
            self.source.close()
            self._opened_here = False

    def __enter__(self) -> PowerSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- sampling ------------------------------------------------------------------------
    def sample_once(self) -> PowerSample:
        """Take one sample now (the thread calls this; tests may too)."""
        t_ns = self._clock_ns()
        try:
            rails = self.source.read()
            sample = PowerSample(t_ns, self.source.total_mw(rails), dict(rails))
        except (EdgeEEError, OSError, ValueError) as exc:
            sample = PowerSample(t_ns, None, {}, f"{type(exc).__name__}: {exc}")
        with self._lock:
            if sample.error is not None:
                if self._error_start is None:
                    self._error_start = t_ns
                self._last_error_ns = t_ns
            elif self._error_start is not None:
                self._error_windows.append((self._error_start, t_ns))
                self._error_start = None
            if len(self._samples) < self._max_samples:
                self._samples.append(sample)
        return sample

    def _loop(self) -> None:
        period_ns = int(self.period_ms * 1e6)
        deadline = self._clock_ns()
        while True:
            self.sample_once()
            if self._stop.is_set():
                return  # the final sample closes the window
            deadline += period_ns
            now = self._clock_ns()
            if deadline < now:
                deadline = now  # fell behind (slow sensor): do not burst
            self._stop.wait((deadline - now) / 1e9)

    def wait_for_sample_after(self, t_ns: int, timeout_s: float | None = None) -> bool:
        """Block until a sample newer than `t_ns` exists (so a window ending at `t_ns` is
        covered); False on timeout (default: 3 periods + 1 s)."""
        timeout_s = 3 * self.period_ms / 1000.0 + 1.0 if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._samples and self._samples[-1].timestamp_ns > t_ns:
                    return True
            time.sleep(min(self.period_ms / 4000.0, 0.01))
        return False

    def mark(self, label: str) -> int:
        """Record a named instant (e.g. 'idle_start', 'run_end'); returns its timestamp_ns."""
        t_ns = self._clock_ns()
        with self._lock:
            self._markers.append((label, t_ns))
        return t_ns

    # -- results -------------------------------------------------------------------------
    @property
    def samples(self) -> list[PowerSample]:
        with self._lock:
            return list(self._samples)

    @property
    def markers(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._markers)

    @property
    def errors(self) -> list[tuple[int, str]]:
        return [(s.timestamp_ns, s.error) for s in self.samples if s.error is not None]

    @property
    def error_windows(self) -> list[tuple[int, int]]:
        """Spans (start_ns, end_ns) without valid data; an open span ends at the last error."""
        with self._lock:
            windows = list(self._error_windows)
            if self._error_start is not None:
                windows.append((self._error_start, self._last_error_ns))
        return windows

    @property
    def healthy(self) -> bool:
        return not self.error_windows

    def series(self) -> tuple[np.ndarray, np.ndarray]:
        """(timestamp_ns int64, total_mw float64) of the samples that have a total."""
        good = [s for s in self.samples if s.total_mw is not None]
        return (np.array([s.timestamp_ns for s in good], dtype=np.int64),
                np.array([s.total_mw for s in good], dtype=np.float64))

    def to_dict(self) -> dict[str, Any]:
        """Raw samples for results.json (no statistics)."""
        samples = self.samples
        rails = sorted({r for s in samples for r in s.rails_mw})
        return {
            "source": self.source.describe(),
            "period_ms": self.period_ms,
            "clock": "monotonic",
            "timestamp_ns": [s.timestamp_ns for s in samples],
            "total_mw": [s.total_mw for s in samples],
            "rails_mw": {r: [s.rails_mw.get(r) for s in samples] for r in rails},
            "errors": [{"timestamp_ns": t, "error": e} for t, e in self.errors],
            "error_windows_ns": [list(w) for w in self.error_windows],
            "markers": [{"label": label, "timestamp_ns": t} for label, t in self.markers],
        }
