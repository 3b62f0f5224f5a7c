"""Progress bars for long host steps (export, int8, statistics passes, training, search).

`progress(...)` is tqdm with the project's settings: on a terminal the usual live bar on
stderr; when stderr is not a terminal (CI logs, `nohup`, a pipe) plain lines at most
every `interval_s` seconds, with no carriage returns or cursor moves. Bars are off when
the caller passes `disable=True` or when `edge-ee --quiet` set the `edge_ee` logger
above INFO.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

LINE_INTERVAL_S = 30.0


class _Lines(io.TextIOBase):
    """A stream for tqdm that turns its in-place updates into whole lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, s: str) -> int:
        text = s.replace("\r", "").replace("\x1b[A", "").strip()
        if text:
            self.stream.write(text + "\n")
            self.stream.flush()
        return len(s)

    def flush(self) -> None:
        self.stream.flush()


def quieted() -> bool:
    """Whether the CLI asked for no progress output (`--quiet`)."""
    return logging.getLogger("edge_ee").level > logging.INFO


def progress(iterable: Iterable[Any] | None = None, *, desc: str | None = None,
             total: float | None = None, unit: str = "it", disable: bool = False,
             leave: bool = False, interval_s: float = LINE_INTERVAL_S, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr: live on a terminal, plain periodic lines otherwise."""
    stream = sys.stderr
    if not stream.isatty():
        kwargs = {"file": _Lines(stream), "mininterval": interval_s, "maxinterval": interval_s,
                  "ascii": True, "dynamic_ncols": False, **kwargs}
        leave = True  # a finished line is worth keeping in a log
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable or quieted(),
                leave=leave, **kwargs)
