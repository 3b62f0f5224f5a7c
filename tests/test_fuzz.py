"""Property-based fuzzing (hypothesis) of every parser that reads a user's or a device's
file: manifest, results, hardware profile, meter CSV and input `.npz`.

Property: whatever the bytes, the parser returns or raises one of the project's typed
errors (`EdgeEEError` subclasses) — never a KeyError/TypeError/ValueError/RecursionError.
Inputs are random documents, and valid documents with one field replaced by a random
JSON value (the hand-edit a careless user makes), or with bytes flipped or cut.

Budget: derandomised (the same examples on every run, no example database), 150 examples
per test (80 for the file-writing ones), no deadline; about 10-20 s for the whole file.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_runners.errors import (
    BundleError,
    EdgeEEError,
    InputSpecError,
    PowerSourceError,
    ProfileError,
    ResultsError,
)
from device_runners.inputs import check_labels, read_arrays
from device_runners.power.meter_csv import UsbMeterCsv
from device_runners.profiles import parse_profile
from device_runners.schema import (
    safe_json_loads,
    safe_yaml_load,
    validate_manifest,
    validate_results,
)
from device_runners.spool import Spool, read_spool
from tests.helpers_fuzz import MANIFEST, PROFILE, RESULTS, _mutate

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FUZZ_FILES = settings(FUZZ, max_examples=80)

def _only(err: type[EdgeEEError], fn, *args: Any) -> None:
    try:
        fn(*args)
    except err:
        pass


def test_base_documents_are_valid() -> None:
    validate_manifest(MANIFEST)
    validate_results(RESULTS)
    parse_profile(PROFILE, "jetson-nano-10w")


@FUZZ
@given(data=st.data())
def test_fuzz_manifest(data: st.DataObject) -> None:
    _only(BundleError, validate_manifest, _mutate(MANIFEST, data))


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzz_json_bytes(raw: bytes) -> None:
    def parse() -> None:
        validate_manifest(safe_json_loads(raw, BundleError, "m"))
    _only(BundleError, parse)


@FUZZ
@given(data=st.data())
def test_fuzz_results(data: st.DataObject) -> None:
    _only(ResultsError, validate_results, _mutate(RESULTS, data))


@FUZZ
@given(data=st.data())
def test_fuzz_profile(data: st.DataObject) -> None:
    def parse() -> None:
        p = parse_profile(_mutate(PROFILE, data), "fuzz")
        for v in (p.idle_power_mw, p.max_power_mw, p.memory_bandwidth_gbps, p.cpu.max_freq_mhz):
            assert math.isfinite(v) and v >= 0  # accepted numbers are physical
    _only(ProfileError, parse)


@FUZZ
@given(text=st.text(max_size=300))
def test_fuzz_yaml_text(text: str) -> None:
    _only(ProfileError, lambda: parse_profile(safe_yaml_load(text, ProfileError, "p"), "p"))


@FUZZ_FILES
@given(header=st.sampled_from(["timestamp_s,power_w", "time,power_mw", "timestamp_ms,voltage_v,"
                               "current_a", "datetime,power_w", "a,b", ""]),
       rows=st.lists(st.lists(st.one_of(st.floats(), st.text(max_size=6)).map(str), max_size=4),
                     max_size=6))
def test_fuzz_meter_csv(tmp_path_factory: pytest.TempPathFactory, header: str,
                        rows: list[list[str]]) -> None:
    p = tmp_path_factory.mktemp("csv") / "m.csv"
    p.write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n")
    src = UsbMeterCsv(csv_path=str(p), timestamps_are_wall_clock=False)
    try:
        src.open()
        pts = src.load_samples()
    except PowerSourceError:
        return
    assert all(math.isfinite(w) and w >= 0 for _, w in pts)
    assert [t for t, _ in pts] == sorted(t for t, _ in pts)


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


GOOD_NPZ = _npz(x=np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1), y=np.array([0, 1]))


@FUZZ_FILES
@given(cut=st.integers(0, len(GOOD_NPZ)), flips=st.lists(
    st.tuples(st.integers(0, len(GOOD_NPZ) - 1), st.integers(0, 255)), max_size=4))
def test_fuzz_input_npz(tmp_path_factory: pytest.TempPathFactory, cut: int,
                        flips: list[tuple[int, int]]) -> None:
    raw = bytearray(GOOD_NPZ)
    for pos, val in flips:
        raw[pos] = val
    p = tmp_path_factory.mktemp("npz") / "x.npz"
    p.write_bytes(bytes(raw[:cut]))
    _only(InputSpecError, read_arrays, p)


@FUZZ
@given(y=st.lists(st.one_of(st.integers(-5, 20), st.floats()), max_size=6),
       as_float=st.booleans())
def test_fuzz_labels(y: list[Any], as_float: bool) -> None:
    arr = np.asarray(y, dtype=np.float64 if as_float or any(isinstance(v, float) for v in y)
                     else np.int64)
    try:
        out = check_labels(arr, len(arr), 10, "labels")
    except InputSpecError:
        return
    assert out.dtype == np.int64 and ((out >= 0) & (out < 10)).all()


@FUZZ_FILES
@given(cols=st.integers(0, 40).flatmap(lambda n: st.fixed_dictionaries({
    "exit": st.lists(st.none() | st.integers(0, 2**62), min_size=n, max_size=n),
    "confidence": st.lists(st.none() | st.floats(allow_nan=False, allow_infinity=False),
                           min_size=n, max_size=n),
    "segment_latency_ns": st.lists(st.none() | st.lists(st.integers(0, 2**62), max_size=4),
                                   min_size=n, max_size=n)})))
def test_fuzz_spool_roundtrip(tmp_path_factory: pytest.TempPathFactory,
                              cols: dict[str, list[Any]]) -> None:
    p = tmp_path_factory.mktemp("spool") / "s"
    sp = Spool(p, flush_rows=7)
    sp.extend(cols)
    sp.close()
    got, _ = read_spool(p)
    for k, v in cols.items():
        assert got.get(k, []) == v, k
