"""A columnar, append-only spool of per-unit records, so a long run's memory stays bounded
and what was measured survives a failed final write.

`Spool(path)` keeps the rows appended since the last flush in compact typed buffers
(`array.array`: int64 for integers, float64 for floats, ragged integer lists such as
`segment_latency_ns` as int64 values plus an int32 length per row) and appends them to
`path` every `flush_rows` rows or `flush_s` seconds. On disk a spool is a sequence of
chunks, each a little-endian uint32 header length, a JSON header (rows, columns, dtypes,
byte counts) and the raw column bytes; a chunk cut short by a crash is ignored on reading,
so a spool is readable whatever happened to the process. `set_meta(dict)` stores a JSON
document in the spool too (the results header; the last one wins), so `recover(spool,
out)` can write a results.json from a spool alone: complete only when the header was
stored again after the last rows and says so, otherwise marked incomplete.

Bytes per inference: 8 per scalar column and 8 per latency value plus 4 per ragged row,
e.g. a single-mode classification row (exit, prediction, confidence, label, pass and 3
segment latencies) is 5·8 + 3·8 + 4 = 68 B on disk and nothing in memory beyond the
current buffer (`flush_rows` rows); the lists it replaces held about 250 B per inference.
`None` is stored as the int64 minimum (integers), NaN (floats) or length -1 (lists) and
read back as None, so JSON written from a spool never holds a bare NaN. A value of
another kind than its column's (a fraction in an integer column, a string) is a
`ResultsError`, never truncated.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from device_runners.errors import ResultsError

INT_NONE = -(1 << 63)
_KINDS = {"i": "q", "f": "d", "li": "q"}  # column kind -> array typecode
_LEN = struct.Struct("<I")


def _kind(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "li"
    if isinstance(value, float):
        return "f"
    if value is None or isinstance(value, (bool, int)) or hasattr(value, "__index__"):
        return "i"
    if hasattr(value, "__float__"):
        return "f"
    raise ResultsError(f"spool: cannot store a {type(value).__name__}; record numbers only")


def _as_int(v: Any, column: str) -> int:
    if isinstance(v, float) and not v.is_integer():
        raise ResultsError(f"spool: column {column!r} holds integers, got {v!r}")
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError) as err:
        raise ResultsError(f"spool: column {column!r} holds integers, got {v!r}") from err


def _column_kind(values: list[Any]) -> str:
    kinds = {_kind(v) for v in values if v is not None}
    if "li" in kinds:
        return "li"
    if any(isinstance(v, float) and not v.is_integer() for v in values if v is not None):
        return "f"
    return "f" if kinds == {"f"} else "i"


class Spool:
    """Append-only columnar store of per-unit records (see the module docstring)."""

    def __init__(self, path: str | Path, flush_rows: int = 4096, flush_s: float = 5.0) -> None:
        self.path = Path(path)
        self.flush_rows, self.flush_s = int(flush_rows), float(flush_s)
        self._kinds: dict[str, str] = {}
        self._buf: dict[str, array] = {}
        self._lens: dict[str, array] = {}
        self._rows = self._flushed = 0
        self._last = time.monotonic()
        try:
            self._fh = open(self.path, "wb")  # kept open for appends
        except OSError as err:
            raise ResultsError(f"cannot create the sample spool {self.path}: {err}; choose an "
                               "--out in a writable folder") from err

    # -- writing --------------------------------------------------------------------------
    def append(self, row: dict[str, Any]) -> None:
        """Add one record (column name → number, None or list of integers)."""
        if not self._kinds:
            for k, v in row.items():
                self._new_column(k, _kind(v))
        elif row.keys() != self._kinds.keys():
            for k in row.keys() - self._kinds.keys():
                if self._rows + self._flushed:
                    raise ResultsError(f"spool: column {k!r} appeared after {len(self)} rows")
                self._new_column(k, _kind(row[k]))
            missing = self._kinds.keys() - row.keys()
            if missing:
                raise ResultsError(f"spool: record lacks columns {sorted(missing)}")
        for k, kind in self._kinds.items():
            v = row[k]
            if kind == "li":
                if v is None:
                    self._lens[k].append(-1)
                    continue
                if not isinstance(v, (list, tuple)):
                    raise ResultsError(f"spool: column {k!r} holds lists, got {v!r}")
                vals = [INT_NONE if x is None else _as_int(x, k) for x in v]
                self._buf[k].extend(vals)
                self._lens[k].append(len(vals))
            elif kind == "f":
                self._buf[k].append(math.nan if v is None else float(v))
            else:
                self._buf[k].append(INT_NONE if v is None else _as_int(v, k))
        self._rows += 1
        if self._rows >= self.flush_rows or time.monotonic() - self._last >= self.flush_s:
            self.flush()

    def extend(self, columns: dict[str, list[Any]]) -> None:
        """Append rows given column-wise (all columns of equal length); each new column's
        kind comes from all its values (lists, any non-integer float, else integers)."""
        n = {len(v) for v in columns.values()}
        if len(n) > 1:
            raise ResultsError(f"spool: columns of different lengths {sorted(n)}")
        keys = list(columns)
        if not len(self):
            for k in keys:
                if k not in self._kinds:
                    self._new_column(k, _column_kind(columns[k]))
        for i in range(n.pop() if n else 0):
            self.append({k: columns[k][i] for k in keys})

    def _new_column(self, name: str, kind: str) -> None:
        self._kinds[name] = kind
        self._buf[name] = array(_KINDS[kind])
        if kind == "li":
            self._lens[name] = array("i")

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Store a JSON document (e.g. the results header) in the spool, after the rows so far."""
        self.flush()
        self._write_chunk({"meta": meta}, b"")

    def flush(self) -> None:
        """Append the buffered rows to the file and empty the buffers."""
        self._last = time.monotonic()
        if not self._rows:
            return
        cols, blobs = {}, []
        for k, kind in self._kinds.items():
            data = self._buf[k].tobytes()
            lens = self._lens[k].tobytes() if kind == "li" else b""
            cols[k] = {"kind": kind, "bytes": len(data), "len_bytes": len(lens)}
            blobs += [data, lens]
        self._write_chunk({"rows": self._rows, "columns": cols}, b"".join(blobs))
        self._flushed += self._rows
        self._rows = 0
        for k, kind in self._kinds.items():
            self._buf[k] = array(_KINDS[kind])
            if kind == "li":
                self._lens[k] = array("i")

    def _write_chunk(self, header: dict[str, Any], payload: bytes) -> None:
        head = json.dumps(header).encode()
        try:
            self._fh.write(_LEN.pack(len(head)) + head + payload)
            self._fh.flush()
        except (OSError, ValueError) as err:
            raise ResultsError(f"cannot write the sample spool {self.path}: {err}; the disk may "
                               "be full") from err

    # -- reading --------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._flushed + self._rows

    def columns(self) -> dict[str, list[Any]]:
        """Every record so far, column-wise (None where a value was None/NaN)."""
        self.flush()
        return read_spool(self.path)[0]

    def close(self) -> None:
        """Flush and close the file (it stays on disk; `discard` removes it)."""
        if not self._fh.closed:
            try:
                self.flush()
            finally:
                self._fh.close()

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def _decode(kind: str, data: bytes, lens: bytes) -> list[Any]:
    vals = array(_KINDS[kind])
    vals.frombytes(data)
    if kind == "f":
        return [None if math.isnan(v) else v for v in vals]
    ints = [None if v == INT_NONE else v for v in vals]
    if kind == "i":
        return ints
    n = array("i")
    n.frombytes(lens)
    out: list[Any] = []
    pos = 0
    for m in n:
        if m < 0:
            out.append(None)
            continue
        out.append(ints[pos:pos + m])
        pos += m
    return out


def read_spool(path: str | Path) -> tuple[dict[str, list[Any]], dict[str, Any] | None]:
    """A spool's columns and its meta document; a chunk cut short at the end is ignored."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ResultsError(f"cannot read spool {p}: {err}") from err
    cols: dict[str, list[Any]] = {}
    meta, pos = None, 0
    meta_last = False
    while pos + 4 <= len(raw):
        (hlen,) = _LEN.unpack_from(raw, pos)
        try:
            head = json.loads(raw[pos + 4: pos + 4 + hlen])
        except (ValueError, UnicodeDecodeError):
            break
        pos += 4 + hlen
        if "meta" in head:
            meta, meta_last = head["meta"], True
            continue
        meta_last = False
        need = sum(c["bytes"] + c["len_bytes"] for c in head["columns"].values())
        if pos + need > len(raw):
            break  # truncated last chunk
        for k, c in head["columns"].items():
            data = raw[pos: pos + c["bytes"]]
            lens = raw[pos + c["bytes"]: pos + c["bytes"] + c["len_bytes"]]
            pos += c["bytes"] + c["len_bytes"]
            cols.setdefault(k, []).extend(_decode(c["kind"], data, lens))
    if meta is not None:
        meta = {**meta, "_meta_is_last": meta_last}
    return cols, meta


def iter_chunks(path: str | Path) -> Iterator[dict[str, list[Any]]]:
    """The spool's rows chunk by chunk (memory: one chunk), skipping meta documents and a
    chunk cut short at the end."""
    try:
        f = open(path, "rb")
    except OSError as err:
        raise ResultsError(f"cannot read spool {path}: {err}") from err
    try:
        while len(hb := f.read(4)) == 4:
            (hlen,) = _LEN.unpack(hb)
            try:
                head = json.loads(f.read(hlen))
            except (ValueError, UnicodeDecodeError):
                return
            if "meta" in head:
                continue
            cols: dict[str, list[Any]] = {}
            for k, c in head["columns"].items():
                data, lens = f.read(c["bytes"]), f.read(c["len_bytes"])
                if len(data) != c["bytes"] or len(lens) != c["len_bytes"]:
                    return
                cols[k] = _decode(c["kind"], data, lens)
            yield cols
    finally:
        f.close()


def write_json_columns(f: IO[str], path: str | Path, names: list[str]) -> int:
    """Write `{"name": [...], ...}` for `names` from the spool at `path`, one column at a
    time and one chunk at a time (memory does not grow with the run); returns the rows."""
    rows = 0
    f.write("{")
    for j, name in enumerate(names):
        f.write(("," if j else "") + f"\n  {json.dumps(name)}: [")
        n = 0
        for chunk in iter_chunks(path):
            for v in chunk.get(name, ()):
                f.write((", " if n else "") + json.dumps(v, allow_nan=False))
                n += 1
        f.write("]")
        rows = n
    f.write("\n }")
    return rows


def recover(spool: str | Path, out: str | Path) -> Path:
    """Write `out` (results.json, marked incomplete) from a spool left by a failed run."""
    from device_runners.results import atomic_write_json

    cols, meta = read_spool(spool)
    meta = dict(meta or {})
    # complete only when the writer stored its header again after the last rows
    complete = bool(meta.pop("_meta_is_last", False) and meta.get("complete"))
    doc = {**meta, "samples": cols, "complete": complete, "recovered_from_spool": str(spool)}
    return atomic_write_json(out, doc)


if __name__ == "__main__":  # python -m device_runners.spool SPOOL OUT.json
    if len(sys.argv) != 3:
        print("usage: python -m device_runners.spool SPOOL OUT.json", file=sys.stderr)
        sys.exit(2)
    try:
        print(f"wrote {recover(sys.argv[1], sys.argv[2])}")
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0)
