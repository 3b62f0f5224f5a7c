"""Logging for the command lines: library code logs, the CLI decides what is shown.

Library modules use `logging.getLogger(__name__)` and never print; `configure_logging`
(called once by `edge-ee`, from `--verbose`/`--quiet`) sends the project's loggers to
stderr. Other libraries' loggers keep their own levels (nothing is muted globally);
`--quiet` also hides progress bars (`converters.progress`).
"""

from __future__ import annotations

import logging
import sys

PROJECT_LOGGERS = ("edge_ee", "converters", "device_runners")


class _Formatter(logging.Formatter):
    """Info as plain lines; warnings and errors prefixed with their level ("WARNING: ...")."""

    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return f"{record.levelname}: {msg}" if record.levelno >= logging.WARNING else msg


def configure_logging(verbosity: int = 0) -> None:
    """verbosity: -1 quiet (warnings and errors), 0 normal (info), 1 verbose (debug)."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s")
                         if verbosity > 0 else _Formatter("%(message)s"))
    for name in PROJECT_LOGGERS:
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(level)
        log.propagate = False
