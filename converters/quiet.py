"""Silence an exporter's chatter for the duration of one call, and only then.

Exporters (torch.onnx, litert-torch) print progress to stdout/stderr, raise warnings and
log at WARNING for things that are expected here. `quiet` captures their output and
raises the named loggers' levels inside the block and restores every level afterwards:
no logger of another library is changed for the rest of the process.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence


@contextlib.contextmanager
def quiet(loggers: Sequence[str] = (), stderr: bool = False) -> Iterator[io.StringIO]:
    """Capture stdout (and stderr with `stderr=True`) and warnings; the named loggers log
    only errors inside the block. Yields the captured text."""
    sink = io.StringIO()
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
                (contextlib.redirect_stderr(sink) if stderr else contextlib.nullcontext()):
            warnings.simplefilter("ignore")
            yield sink
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
