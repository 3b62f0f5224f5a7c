"""`edge-ee build --overheads FILE`: charge the costs a device measured, not the host's own.

The file comes from `edge-ee-run BUNDLE --measure-overheads` on the device
(`device_runners/overheads.py`), run on a bundle built with `--candidates`. It is read
with the safe JSON reader, schema-checked (`device_runners.schema.validate_overheads`),
and its candidates' identity must equal that of the model being built
(`edge_ee.candidates.candidate_identity`: model, input shape, FLOPs, every exit's point,
head and feature shape); otherwise an `OverheadsError` says which field differs and how
to get a matching file. Per exit, the FLOPs-equivalent charged in the threshold search
is `boundary_fraction × full FLOPs − head FLOPs` (the head's FLOPs are already in the
cost table), never below 0 — the same conversion as the host's measurement
(`edge_ee.boundary`), so only the machine differs. A schema-2 file also holds each exit's
in-graph cost (`ingraph_fraction`: the probe assembled as one ONNX graph with the exit's
`If`, exit off); `--charge-strategy` chooses which one is charged (`charged_strategy`).
The record says `source: device`, the strategy charged, the file's sha256, the device's
identity and the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from device_runners.errors import OverheadsError
from device_runners.manifest import sha256_bytes
from device_runners.schema import safe_json_loads, validate_overheads

MAX_BYTES = 16 << 20


def read_overheads(path: str | Path) -> tuple[dict[str, Any], str]:
    """(the checked document, its sha256); OverheadsError when unreadable or malformed."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise OverheadsError(f"--overheads {p}: cannot read it ({err.strerror}); pass the file "
                             "edge-ee-run --measure-overheads wrote on the device") from err
    if len(raw) > MAX_BYTES:
        raise OverheadsError(f"--overheads {p} is {len(raw)} bytes, too large for an overheads "
                             "file; pass the file edge-ee-run --measure-overheads wrote")
    doc = safe_json_loads(raw, OverheadsError, f"--overheads {p} (a file of edge-ee-run BUNDLE "
                          "--measure-overheads)", constants=False)
    validate_overheads(doc, OverheadsError, f"--overheads {p}")
    return doc, sha256_bytes(raw)


def _difference(want: dict[str, Any], got: dict[str, Any]) -> str | None:
    """The first field where two identities differ, in words (None: they match)."""
    for key in ("model", "input_shape", "full_flops"):
        if want.get(key) != got.get(key):
            return f"{key} is {got.get(key)!r} in the file, {want.get(key)!r} here"
    wi = [e["exit_index"] for e in want["exits"]]
    gi = [e.get("exit_index") for e in got.get("exits", [])]
    if wi != gi:
        return f"the file measured exits {gi}, this build has exits {wi}"
    for w, g in zip(want["exits"], got["exits"], strict=True):
        for key in ("point", "kind", "confidence", "head_flops", "feature_shape"):
            if w.get(key) != g.get(key):
                return (f"exit {w['exit_index']}: {key} is {g.get(key)!r} in the file, "
                        f"{w.get(key)!r} here")
    return None


def charged_strategy(doc: dict[str, Any], strategy: str, path: str | Path) -> str:
    """Which costs to charge: `split`, `ingraph` (needs a schema-2 file of a bundle whose
    candidates carry in-graph probes), or for `auto` `ingraph` when the file has it (as the
    host does: what an ONNX bundle runs under a bound), else `split`."""
    has_ingraph = all(e.get("ingraph_fraction") is not None for e in doc["exits"])
    if strategy == "ingraph" and not has_ingraph:
        raise OverheadsError(f"--overheads {path} has no in-graph measurements (written by an "
                             "older edge-ee, or its bundle carries no in-graph probes: ONNX "
                             "only); rebuild the --candidates bundle with this edge-ee and "
                             "measure again, or pass --charge-strategy split")
    if strategy != "auto":
        return strategy
    return "ingraph" if has_ingraph else "split"


def _fraction(e: dict[str, Any], charged: str) -> float:
    return e["boundary_fraction"] if charged == "split" else e["ingraph_fraction"]


def device_overheads(path: str | Path, identity: dict[str, Any], head_flops: tuple[int, ...],
                     strategy: str = "auto") -> tuple[tuple[float, ...], dict[str, Any]]:
    """(FLOPs-equivalent per exit, the calibration record's `exit_overhead`) from a file;
    `strategy`: whose costs to charge (`charged_strategy`)."""
    doc, digest = read_overheads(path)
    diff = _difference(identity, doc["identity"])
    if diff is not None:
        raise OverheadsError(
            f"--overheads {path} was measured on other candidate exits ({diff}); build a "
            "candidates bundle with this model and these exit options (edge-ee build ... "
            "--candidates), run edge-ee-run BUNDLE --measure-overheads on the device, and pass "
            "that file")
    full = identity["full_flops"]
    charged = charged_strategy(doc, strategy, path)
    by_exit = {e["exit_index"]: e for e in doc["exits"]}
    flops = []
    for i, h in enumerate(head_flops):
        e = by_exit.get(i)
        flops.append(0.0 if e is None else max(0.0, _fraction(e, charged) * full - h))
    record = {"source": "device", "file": str(path), "sha256": digest,
              "bundle_manifest_sha256": doc["bundle"]["manifest_sha256"],
              "device": doc["device"], "measured_at": doc.get("measured_at"),
              "statistic": doc.get("statistic"), "rounds": doc["rounds"],
              "full_latency_us": doc["full_latency_us"],
              "strategy": charged,
              "fraction": [_fraction(by_exit[i], charged) if i in by_exit else 0.0
                           for i in range(len(head_flops))],
              "by_strategy": {k: {"raw_fraction": [by_exit[i].get(f) if i in by_exit else 0.0
                                                   for i in range(len(head_flops))]}
                              for k, f in (("split", "boundary_fraction"),
                                           ("ingraph", "ingraph_fraction"))},
              "head_us": [by_exit[i]["head_us"] if i in by_exit else 0.0
                          for i in range(len(head_flops))],
              "overhead_flops": flops}
    return tuple(flops), record
