"""Documents and mutations shared by tests/test_fuzz.py and benchmarks/hardening_fuzz.py:
a valid manifest, results and profile, and `_mutate` (one field replaced or deleted).
Imports nothing from the project, so the benchmark can run it against an older tree."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12)

H = "ab" * 32
MANIFEST: dict[str, Any] = {
    "schema_version": 1, "kind": "edge-ee-bundle", "model": {"name": "m"},
    "input": {"name": "x", "shape": [None, 1, 28, 28], "dtype": "float32", "layout": "NCHW",
              "raw": {"dtype": "uint8", "shape": [None, 28, 28, 1], "layout": "NHWC",
                      "scale": 1 / 255, "mean": [0.5], "std": [0.25]}},
    "classes": ["a", "b"],
    "segments": [
        {"index": 0, "name": "seg0", "files": {"onnx": "seg0.onnx"}, "inputs": ["x"],
         "outputs": ["feature", "prediction", "confidence", "exit"], "flops": 100,
         "exit": {"kind": "e2cm", "threshold": 0.9}},
        {"index": 1, "name": "seg1", "files": {"onnx": "seg1.onnx"}, "inputs": ["x"],
         "outputs": ["prediction", "confidence"], "flops": 200,
         "exit": {"kind": "final", "threshold": None}}],
    "files": {"seg0.onnx": H, "seg1.onnx": H, "golden.npz": H},
    "golden": {"file": "golden.npz", "atol": 1e-4, "rtol": 1e-3, "confidence_atol": 2e-3},
}
RESULTS: dict[str, Any] = {
    "schema_version": 1, "kind": "edge-ee-results",
    "bundle": {"manifest_sha256": H, "model": "m"}, "backend": {"name": "onnxruntime",
                                                                "threads": 1},
    "protocol": {"mode": "single"}, "complete": True, "init_ns": 5,
    "samples": {"exit": [0, 1], "prediction": [3, 4], "confidence": [0.5, None],
                "label": [3, None], "segment_latency_ns": [[10], [10, 20]], "pass": [0, 0]},
    "batches": None,
    "power": {"timestamp_ns": [1, 2], "total_mw": [100.0, 110.0], "window_ns": [1, 2],
              "markers": [{"label": "run_start", "timestamp_ns": 1}], "idle": None,
              "update_period_ms": 10.0},
}
PROFILE = yaml.safe_load((ROOT / "hardware_profiles" / "jetson-nano-10w.yaml").read_text())


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, data: st.DataObject) -> Any:
    """A copy of `doc` with one field (or the whole) replaced or deleted."""
    doc = copy.deepcopy(doc)
    path = data.draw(st.sampled_from(_paths(doc)))
    value = data.draw(json_values)
    if not path:
        return value
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc
