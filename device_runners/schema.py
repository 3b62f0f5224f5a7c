"""Typed schemas of the three documents that cross the host/device line: the bundle
manifest, the run results and the hardware profile.

One validator each, in plain Python (no dependency): `validate_manifest`,
`validate_results`, `validate_profile`. The host calls them before writing a document
and the device (or the report) calls them after reading one, so both sides agree on
types, ranges and finiteness. A document that fails raises the typed error of its kind
(`BundleError`, `ResultsError`, `ProfileError`) naming the field and how to fix it —
never a KeyError, TypeError or a silent NaN. Unknown extra sections are allowed in
manifests and results (tasks add their own); every field that the runner or the report
reads is checked here.

`safe_json_loads` and `safe_yaml_load` are the parsers for these documents: size and
nesting limits, UTF-8 only, no YAML aliases (an alias bomb is refused, not expanded).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from device_runners.errors import (
    BundleError,
    EdgeEEError,
    ProfileError,
    ResultsError,
    SchemaVersionError,
)

BUNDLE_SCHEMA_VERSION = 1
RESULTS_SCHEMA_VERSION = 1
MAX_DEPTH = 64  # nesting levels accepted in a JSON/YAML document
MAX_DOCUMENT_BYTES = 256 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
NONNEGATIVE_CONFIDENCES = ("max_softmax", "temperature", "margin")


class _Check:
    """Type/range helpers that raise `err` with the field path and a fix."""

    def __init__(self, err: type[EdgeEEError], where: str, fix: str) -> None:
        self.err, self.where, self.fix = err, where, fix

    def fail(self, path: str, problem: str) -> None:
        raise self.err(f"{self.where}: field '{path}' {problem}; {self.fix}")

    def obj(self, v: Any, path: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            self.fail(path, f"must be an object, got {type(v).__name__}")
        return v

    def lst(self, v: Any, path: str, nonempty: bool = False) -> list[Any]:
        if not isinstance(v, list):
            self.fail(path, f"must be a list, got {type(v).__name__}")
        if nonempty and not v:
            self.fail(path, "must not be empty")
        return v

    def string(self, v: Any, path: str, none: bool = False) -> str | None:
        if v is None and none:
            return None
        if not isinstance(v, str) or not v:
            self.fail(path, f"must be a non-empty string, got {_short(v)}")
        return v

    def boolean(self, v: Any, path: str) -> bool:
        if not isinstance(v, bool):
            self.fail(path, f"must be true or false, got {_short(v)}")
        return v

    def integer(self, v: Any, path: str, lo: int | None = None, hi: int | None = None,
                none: bool = False) -> int | None:
        if v is None and none:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(path, f"must be an integer, got {_short(v)}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.fail(path, f"is {v}, outside [{lo if lo is not None else '-inf'}, "
                            f"{hi if hi is not None else 'inf'}]")
        return v

    def number(self, v: Any, path: str, lo: float | None = None, hi: float | None = None,
               none: bool = False, lo_open: bool = False) -> float | None:
        if v is None and none:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(path, f"must be a number, got {_short(v)}")
        if not math.isfinite(v):
            self.fail(path, f"is {v}, not a finite number")
        if lo is not None and (v <= lo if lo_open else v < lo):
            self.fail(path, f"is {v}, must be {'>' if lo_open else '>='} {lo}")
        if hi is not None and v > hi:
            self.fail(path, f"is {v}, must be <= {hi}")
        return float(v)

    def each(self, v: Any, path: str, fn: Callable[[Any, str], Any]) -> list[Any]:
        return [fn(item, f"{path}[{i}]") for i, item in enumerate(self.lst(v, path))]


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _depth_ok(obj: Any, limit: int = MAX_DEPTH) -> bool:
    stack = [(obj, 0)]
    while stack:
        node, d = stack.pop()
        if d > limit:
            return False
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return True


def safe_json_loads(raw: bytes, err: type[EdgeEEError], where: str,
                    constants: bool = True) -> Any:
    """Parse a JSON document: UTF-8 only, bounded size and nesting. NaN/Infinity literals
    are read (older files carry them in informational sections) unless `constants` is
    false; the validators reject them wherever a value is used."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise err(f"{where} is {len(raw)} bytes, more than {MAX_DOCUMENT_BYTES}; it is not a "
                  "document edge-ee wrote")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise err(f"{where} is not UTF-8 text ({e}); re-copy it or re-create it with edge-ee") from e
    try:
        return json.loads(text, **({} if constants else {"parse_constant": _no_constant}))
    except RecursionError:
        raise err(f"{where} nests deeper than the JSON parser allows; it is not a document "
                  "edge-ee wrote") from None
    except (json.JSONDecodeError, ValueError) as e:
        raise err(f"{where} is not valid JSON ({e}); re-copy it or re-create it") from e


def _no_constant(name: str) -> Any:
    raise ValueError(f"bare {name} is not JSON (write null)")


def _nesting(text: str) -> int:
    """Deepest bracket nesting outside strings (pre-check before parsing small YAML files)."""
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def safe_yaml_load(text: str, err: type[EdgeEEError], where: str) -> Any:
    """`yaml.safe_load` that refuses anchors/aliases (alias bombs) and deep nesting."""
    import yaml

    class _NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, "YAML aliases (*name) are not allowed in edge-ee files",
                    event.start_mark)
            return super().compose_node(parent, index)

    if len(text) > MAX_DOCUMENT_BYTES:
        raise err(f"{where} is too large to be an edge-ee YAML file")
    if _nesting(text.replace('"', "")) > MAX_DEPTH:
        raise err(f"{where} nests deeper than {MAX_DEPTH} levels; simplify it")
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader subclass
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise err(f"{where} is not valid YAML for edge-ee ({e}); fix the syntax and write "
                  "values out instead of using anchors/aliases") from e
    if not _depth_ok(data):
        raise err(f"{where} nests deeper than {MAX_DEPTH} levels; simplify it")
    return data


# ----------------------------------------------------------------------------- manifest

def _graph_entry(c: _Check, g: Any, path: str) -> None:
    c.obj(g, path)
    files = c.obj(g.get("files"), f"{path}.files")
    if not files:
        c.fail(f"{path}.files", "must name at least one graph file")
    for fmt, name in files.items():
        c.string(name, f"{path}.files.{fmt}")
    for key in ("inputs", "outputs"):
        if key in g:
            c.each(g[key], f"{path}.{key}", c.string)


def _exit(c: _Check, e: Any, path: str, final: bool) -> None:
    c.obj(e, path)
    kind = c.string(e.get("kind"), f"{path}.kind")
    if final and kind != "final":
        c.fail(f"{path}.kind", "must be 'final' on the last segment (the final classifier)")
    # probabilities and margins are >= 0 (a negative threshold would fire always); other
    # criteria (e.g. negative entropy of trained exits) only need to be finite
    bounded = e.get("confidence") in NONNEGATIVE_CONFIDENCES
    c.number(e.get("threshold"), f"{path}.threshold", lo=0 if bounded else None, none=True)
    if e.get("thresholds") is not None:
        c.each(e["thresholds"], f"{path}.thresholds", lambda v, p: c.number(v, p, lo=0))


def validate_manifest(m: Any, where: str = "manifest.json") -> None:
    """Types, ranges and finiteness of a bundle manifest (writer and reader)."""
    c = _Check(BundleError, where, "re-export the bundle with edge-ee (or undo the edit)")
    if not isinstance(m, dict):
        raise BundleError(f"{where} is not a JSON object; re-export the bundle with edge-ee")
    missing = [k for k in ("schema_version", "kind", "model", "input", "classes", "segments",
                           "files") if k not in m]
    if missing:
        raise BundleError(f"{where} lacks {missing}; re-export the bundle with edge-ee export")
    if m["kind"] != "edge-ee-bundle":
        raise BundleError(f"{where}: kind is {_short(m['kind'])}, not 'edge-ee-bundle'")
    v = c.integer(m["schema_version"], "schema_version", lo=1)
    if v > BUNDLE_SCHEMA_VERSION:  # type: ignore[operator]
        raise SchemaVersionError(
            f"{where} has schema version {v}, this runner reads up to {BUNDLE_SCHEMA_VERSION}; "
            "upgrade edge-ee on the device (or re-pack the runner with edge-ee pack-runner)")
    c.string(c.obj(m["model"], "model").get("name"), "model.name")
    spec = c.obj(m["input"], "input")
    shape = c.lst(spec.get("shape"), "input.shape", nonempty=True)
    for i, d in enumerate(shape[1:], 1):
        if d is not None:  # null: a dynamic axis (e.g. a language model's token sequence)
            c.integer(d, f"input.shape[{i}]", lo=1, hi=1 << 20)
    c.string(spec.get("dtype"), "input.dtype")
    if spec.get("raw") is not None:
        raw = c.obj(spec["raw"], "input.raw")
        c.string(raw.get("dtype"), "input.raw.dtype")
        for i, d in enumerate(c.lst(raw.get("shape"), "input.raw.shape", nonempty=True)[1:], 1):
            c.integer(d, f"input.raw.shape[{i}]", lo=1, hi=1 << 20)
        c.number(raw.get("scale"), "input.raw.scale", lo=0, lo_open=True)
        c.each(raw.get("mean"), "input.raw.mean", lambda x, p: c.number(x, p))
        c.each(raw.get("std"), "input.raw.std", lambda x, p: c.number(x, p, lo=0, lo_open=True))
        if raw.get("resize") is not None:  # image folders: shorter side, then centre crop
            c.integer(raw["resize"], "input.raw.resize", lo=1, hi=1 << 16)
        if raw.get("crop") is not None:
            crop = c.lst(raw["crop"], "input.raw.crop", nonempty=True)
            if len(crop) != 2:
                c.fail("input.raw.crop", "must be [height, width]")
            for i, d in enumerate(crop):
                c.integer(d, f"input.raw.crop[{i}]", lo=1, hi=1 << 16)
    c.each(c.lst(m["classes"], "classes", nonempty=True), "classes", c.string)
    files = c.obj(m["files"], "files")
    for name, digest in files.items():
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            c.fail(f"files.{name}", "must be a lowercase 64-hex sha256")
    segs = c.lst(m["segments"], "segments", nonempty=True)
    for i, s in enumerate(segs):
        p = f"segments[{i}]"
        c.obj(s, p)
        lack = [k for k in ("index", "name", "files", "inputs", "outputs", "flops", "exit")
                if k not in s]
        if lack:
            raise BundleError(f"{where}: segment {i} lacks {lack}; re-export the bundle")
        if c.integer(s["index"], f"{p}.index") != i:
            raise BundleError(f"{where}: segment {i} has index {s['index']}; segments out of order")
        c.string(s["name"], f"{p}.name")
        _graph_entry(c, s, p)
        c.number(s["flops"], f"{p}.flops", lo=0)
        _exit(c, s["exit"], f"{p}.exit", final=i == len(segs) - 1)
    for key, g in (m.get("graphs") or {}).items():
        _graph_entry(c, g, f"graphs.{key}")
    if isinstance(m.get("segmentation"), dict) and m["segmentation"].get("assemble"):
        _graph_entry(c, m["segmentation"]["assemble"], "segmentation.assemble")
    if m.get("strategies") is not None:
        for key, g in c.obj(m["strategies"], "strategies").items():
            c.obj(g, f"strategies.{key}")
            if "files" in g:
                _graph_entry(c, g, f"strategies.{key}")
    if m.get("golden") is not None:
        g = c.obj(m["golden"], "golden")
        c.string(g.get("file"), "golden.file")
        for k in ("atol", "rtol", "confidence_atol"):
            c.number(g.get(k), f"golden.{k}", lo=0, none=True)
        for fmt, t in (g.get("formats") or {}).items():
            c.obj(t, f"golden.formats.{fmt}")
            for k in ("atol", "rtol", "confidence_atol"):
                c.number(t.get(k), f"golden.formats.{fmt}.{k}", lo=0, none=True)


def referenced_files(m: dict[str, Any]) -> dict[str, str]:
    """Every file name the manifest points at (name → where), all of which must be in `files`."""
    refs: dict[str, str] = {}
    for s in m["segments"]:
        for fmt, name in s["files"].items():
            refs.setdefault(name, f"segments[{s['index']}].files.{fmt}")
    graphs = dict(m.get("graphs") or {})
    seg = m.get("segmentation")
    if isinstance(seg, dict) and seg.get("assemble"):
        graphs.setdefault("segmentation.assemble", seg["assemble"])
    for key, g in graphs.items():
        for fmt, name in g["files"].items():
            refs.setdefault(name, f"graphs.{key}.files.{fmt}")
    for key, g in (m.get("strategies") or {}).items():
        for fmt, name in (g.get("files") or {}).items():
            refs.setdefault(name, f"strategies.{key}.files.{fmt}")
    cand = m.get("candidates")
    for i, g in enumerate((cand.get("groups") or []) if isinstance(cand, dict) else []):
        if isinstance(g, dict) and isinstance(g.get("ingraph"), str):
            refs.setdefault(g["ingraph"], f"candidates.groups[{i}].ingraph")
    if m.get("golden"):
        refs.setdefault(m["golden"]["file"], "golden.file")
    return refs


# ----------------------------------------------------------------------------- results

def _opt_int_list(c: _Check, v: Any, path: str, lo: int | None = None) -> None:
    c.each(v, path, lambda x, p: c.integer(x, p, lo=lo, none=True))


def validate_results(r: Any, where: str = "results.json") -> None:
    """Types, ranges and finiteness of a results document (the runner writes, the report reads)."""
    c = _Check(ResultsError, where, "pass a results.json written by edge-ee-run (or undo the edit)")
    if not isinstance(r, dict) or r.get("kind") != "edge-ee-results":
        raise ResultsError(f"{where} is not an edge-ee results file; pass one written by edge-ee-run")
    missing = [k for k in ("schema_version", "kind", "bundle", "backend", "protocol", "samples",
                           "complete") if k not in r]
    if missing:
        raise ResultsError(f"{where} lacks {missing}; it was not written by edge-ee-run")
    v = c.integer(r["schema_version"], "schema_version", lo=1)
    if v > RESULTS_SCHEMA_VERSION:  # type: ignore[operator]
        raise SchemaVersionError(f"{where} has results schema {v}, this edge-ee reads up to "
                                 f"{RESULTS_SCHEMA_VERSION}; upgrade edge-ee on the host")
    b = c.obj(r["bundle"], "bundle")
    sha = c.string(b.get("manifest_sha256"), "bundle.manifest_sha256")
    if not _HEX64.fullmatch(sha or ""):
        c.fail("bundle.manifest_sha256", "must be a lowercase 64-hex sha256")
    c.string(b.get("model"), "bundle.model")
    be = c.obj(r["backend"], "backend")
    c.string(be.get("name"), "backend.name")
    c.integer(be.get("threads"), "backend.threads", lo=1, none=True)
    proto = c.obj(r["protocol"], "protocol")
    c.string(proto.get("mode"), "protocol.mode", none=True)
    c.boolean(r["complete"], "complete")
    for k in ("init_ns", "first_inference_ns", "started_monotonic_ns", "ended_monotonic_ns",
              "peak_rss_kib"):
        c.integer(r.get(k), k, none=True)
    s = c.obj(r["samples"], "samples")
    lengths = {k: len(c.lst(col, f"samples.{k}")) for k, col in s.items()}
    if len(set(lengths.values())) > 1:
        c.fail("samples", f"has columns of different lengths {lengths}")
    for k in ("exit", "pass", "image"):
        if k in s:
            _opt_int_list(c, s[k], f"samples.{k}", lo=0)
    for k in ("prediction", "label"):
        if k in s:
            _opt_int_list(c, s[k], f"samples.{k}")
    for k in ("confidence", "latency_ns"):
        if k in s:
            c.each(s[k], f"samples.{k}", lambda x, p: c.number(x, p, none=True))
    if "segment_latency_ns" in s:
        c.each(s["segment_latency_ns"], "samples.segment_latency_ns",
               lambda x, p: _opt_int_list(c, x, p, lo=0))
    if r.get("batches") is not None:
        for i, bt in enumerate(c.lst(r["batches"], "batches")):
            c.obj(bt, f"batches[{i}]")
            c.integer(bt.get("size"), f"batches[{i}].size", lo=0)
            _opt_int_list(c, bt.get("segment_latency_ns"), f"batches[{i}].segment_latency_ns", 0)
            _opt_int_list(c, bt.get("active", []), f"batches[{i}].active", lo=0)
    if r.get("power") is not None:
        _power(c, c.obj(r["power"], "power"))


def _power(c: _Check, pw: dict[str, Any]) -> None:
    stamps = c.lst(pw.get("timestamp_ns", []), "power.timestamp_ns")
    totals = c.lst(pw.get("total_mw", []), "power.total_mw")
    c.each(stamps, "power.timestamp_ns", lambda x, p: c.integer(x, p))
    c.each(totals, "power.total_mw", lambda x, p: c.number(x, p, lo=0, none=True))
    if len(stamps) != len(totals):
        c.fail("power.total_mw", f"has {len(totals)} values for {len(stamps)} timestamps")
    if pw.get("window_ns") is not None:
        w = c.lst(pw["window_ns"], "power.window_ns")
        if len(w) != 2:
            c.fail("power.window_ns", "must be [start_ns, end_ns]")
        _opt_int_list(c, w, "power.window_ns")
    for i, mk in enumerate(c.lst(pw.get("markers", []), "power.markers")):
        c.obj(mk, f"power.markers[{i}]")
        c.string(mk.get("label"), f"power.markers[{i}].label")
        c.integer(mk.get("timestamp_ns"), f"power.markers[{i}].timestamp_ns")
    for i, w in enumerate(c.lst(pw.get("error_windows_ns", []), "power.error_windows_ns")):
        if not isinstance(w, list) or len(w) != 2:
            c.fail(f"power.error_windows_ns[{i}]", "must be [start_ns, end_ns]")
        _opt_int_list(c, w, f"power.error_windows_ns[{i}]")
    if pw.get("idle") is not None:
        c.number(c.obj(pw["idle"], "power.idle").get("idle_power_mw"), "power.idle.idle_power_mw",
                 lo=0, none=True)
    for k in ("update_period_ms", "period_ms"):
        c.number(pw.get(k), f"power.{k}", lo=0, lo_open=True, none=True)
    if pw.get("source") is not None:
        c.obj(pw["source"], "power.source")


# ----------------------------------------------------------------------------- profile

def validate_profile(data: Any, source: str = "<dict>") -> Any:
    """Check a profile mapping (types, units, ranges, finiteness) and build a
    `HardwareProfile`; the parser lives beside the dataclasses in `profiles.py`."""
    from device_runners.profiles import parse_profile
    return parse_profile(data, source)


def profile_number(v: Any, where: str, optional: bool = False, positive: bool = False) -> float | None:
    """A profile's physical quantity: a finite number, >= 0 (> 0 when `positive`)."""
    c = _Check(ProfileError, "profile", "fix the value in the YAML file")
    if v is None and optional:
        return None
    return c.number(v, where, lo=0, lo_open=positive)


# ----------------------------------------------------------------------------- overheads

OVERHEADS_KIND = "edge-ee-overheads"
OVERHEADS_SCHEMA_VERSION = 2  # 2: optional in-graph figures per exit (ingraph_fraction)


def validate_overheads(d: Any, err: type[EdgeEEError], where: str = "overheads.json") -> None:
    """Types and ranges of a device-measured overheads file (`edge-ee-run --measure-overheads`)."""
    c = _Check(err, where, "measure it again with edge-ee-run BUNDLE --measure-overheads")
    c.obj(d, "<document>")
    if d.get("kind") != OVERHEADS_KIND:
        c.fail("kind", f"is {_short(d.get('kind'))}, not {OVERHEADS_KIND!r} (not an overheads file)")
    v = c.integer(d.get("schema_version"), "schema_version", lo=1)
    if v > OVERHEADS_SCHEMA_VERSION:  # type: ignore[operator]
        raise SchemaVersionError(f"{where} has schema version {v}, this edge-ee reads up to "
                                 f"{OVERHEADS_SCHEMA_VERSION}; upgrade edge-ee on the host")
    b = c.obj(d.get("bundle"), "bundle")
    if not isinstance(b.get("manifest_sha256"), str) or not _HEX64.fullmatch(b["manifest_sha256"]):
        c.fail("bundle.manifest_sha256", "must be a lowercase 64-hex sha256")
    ident = c.obj(d.get("identity"), "identity")
    c.integer(ident.get("full_flops"), "identity.full_flops", lo=1)
    c.each(ident.get("input_shape"), "identity.input_shape", lambda x, p: c.integer(x, p, lo=1))
    for key in ("runtime", "backend", "machine"):
        c.string(c.obj(d.get("device"), "device").get(key), f"device.{key}")
    c.integer(d["device"].get("threads"), "device.threads", lo=1)
    c.integer(d.get("rounds"), "rounds", lo=1)
    c.number(d.get("full_latency_us"), "full_latency_us", lo=0, lo_open=True)
    exits = c.lst(d.get("exits"), "exits", nonempty=True)
    for i, e in enumerate(exits):
        p = f"exits[{i}]"
        c.obj(e, p)
        c.integer(e.get("exit_index"), f"{p}.exit_index", lo=0)
        c.number(e.get("boundary_fraction"), f"{p}.boundary_fraction", lo=-1)
        c.number(e.get("head_us"), f"{p}.head_us", lo=0)
        c.number(e.get("ingraph_fraction"), f"{p}.ingraph_fraction", lo=-1, none=True)
    idx = [e["exit_index"] for e in exits]
    if idx != sorted(set(idx)):
        c.fail("exits", "must list each exit once, in order")
    if [e.get("exit_index") for e in c.lst(ident.get("exits"), "identity.exits", True)] != idx:
        c.fail("exits", "must match identity.exits")
