"""argparse `type=` functions that validate numeric flags before anything runs.

Each returns a converter that raises `argparse.ArgumentTypeError` with the allowed range,
so argparse prints `argument --batch-size: must be an integer >= 1, got '0'` and exits
with code 2 (no traceback, the flag named). Shared by `edge-ee-run` and `edge-ee`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer in [lo, hi]."""
    def conv(text: str) -> int:
        try:
            v = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer{_range(lo, hi)}, "
                                             f"got {text!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be an integer{_range(lo, hi)}, got {text!r}")
        return v
    conv.__name__ = "integer"
    return conv


def number(lo: float | None = None, hi: float | None = None,
           lo_open: bool = False) -> Callable[[str], float]:
    """A finite number in [lo, hi] (or (lo, hi] when `lo_open`)."""
    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        bad = (not math.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo))
               or (hi is not None and v > hi))
        if bad:
            raise argparse.ArgumentTypeError(
                f"must be a finite number{_range(lo, hi, lo_open)}, got {text!r}")
        return v
    conv.__name__ = "number"
    return conv


def int_list(lo: int | None = 0) -> Callable[[str], tuple[int, ...]]:
    """Comma-separated distinct integers >= lo, e.g. `0,2,3`."""
    def conv(text: str) -> tuple[int, ...]:
        parts = [p.strip() for p in text.split(",")]
        try:
            vals = tuple(int(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be comma-separated integers (e.g. 0,1), got {text!r}") from None
        if (lo is not None and any(v < lo for v in vals)) or len(set(vals)) != len(vals):
            raise argparse.ArgumentTypeError(f"must be distinct integers >= {lo}, got {text!r}")
        return vals
    conv.__name__ = "int_list"
    return conv


def hex_digest(text: str) -> str:
    """A sha256 as 64 hex digits."""
    t = text.strip().lower()
    if len(t) != 64 or any(c not in "0123456789abcdef" for c in t):
        raise argparse.ArgumentTypeError(f"must be a sha256 of 64 hex digits, got {text!r}")
    return t


def _range(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows every option's default: appended as "(default: X)" unless the help text
    already says it (any "default"), "(default: none)" for None; flags (store_true …) and
    required options get nothing appended. Shared by `edge-ee` and `edge-ee-run`."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        flag = isinstance(action, (argparse._StoreConstAction, argparse._HelpAction,
                                   argparse._VersionAction, argparse._CountAction))
        positional = not action.option_strings and action.nargs not in ("?", "*")
        if (flag or positional or action.required or action.default is argparse.SUPPRESS
                or "default" in text.lower()):
            return text
        return text + (" (default: none)" if action.default is None else " (default: %(default)s)")
