"""argparse `type=` functions for `edge-ee` flags: every value checked before any work.

Numeric converters come from `device_runners.argtypes` (shared with `edge-ee-run`); the
ones here check host-only texts (exit specs, exit lists, export formats) and return the
text unchanged, so the code that later parses it stays as it is. A bad value makes
argparse print `argument --exit: ...` and exit with code 2, before any pass over data.
"""

from __future__ import annotations

import argparse

from device_runners.argtypes import hex_digest, int_list, integer, number
from edge_ee.errors import ConfigError

__all__ = ["exit_at", "exit_spec", "exits", "float_tuple", "formats", "hex_digest", "int_list",
           "int_tuple", "integer", "number"]

FORMATS = ("onnx", "tflite")  # the fp32 export formats of converters.bundle


def exit_spec(text: str) -> str:
    """`kind[:pool][:confidence]`, checked with `ExitSpec.parse`."""
    from edge_ee.exits import ExitSpec
    try:
        ExitSpec.parse(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def exit_at(text: str) -> str:
    """`IDX=SPEC`, e.g. `3=lda:2:margin`."""
    idx, sep, spec = text.partition("=")
    if not sep or not idx.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: write IDX=SPEC, e.g. 3=lda:2:margin")
    exit_spec(spec)
    return text


def exits(text: str) -> str:
    """Comma-separated distinct exit point indices >= 0, e.g. `0,2,3`."""
    int_list(0)(text)
    return text


def formats(text: str) -> str:
    """Comma-separated export formats, each one of FORMATS."""
    names = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in names if f not in FORMATS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown formats {bad or text!r}; choose from "
                                         f"{', '.join(FORMATS)} (comma-separated)")
    return text


def strategies(text: str) -> tuple[str, ...]:
    """Comma-separated execution strategies a bundle carries (device_runners.strategies);
    `split` is always among them (every runner can run it)."""
    from device_runners.strategies import STRATEGIES
    names = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    bad = [f for f in names if f not in STRATEGIES]
    if bad or "split" not in names:
        raise argparse.ArgumentTypeError(
            f"--strategies {text!r}: give split and optionally "
            f"{', '.join(k for k in STRATEGIES if k != 'split')} (comma-separated), e.g. "
            "split,ingraph; " + (f"unknown {bad}" if bad else "split is always carried"))
    return names


def int_tuple(text: str) -> tuple[int, ...]:
    """A shape: positive integers separated by commas (e.g. 3,32,32)."""
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: write positive integers separated by "
                                         "commas, e.g. 3,32,32")
    return vals


def float_tuple(text: str) -> tuple[float, ...]:
    """Per-channel values: finite numbers separated by commas (e.g. 0.485,0.456,0.406)."""
    import math
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if not vals or not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: write finite numbers separated by commas, "
                                         "e.g. 0.485,0.456,0.406")
    return vals
