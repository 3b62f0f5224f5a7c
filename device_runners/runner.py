"""Run a bundle: self-check on golden I/O, then samples one at a time or in shrinking batches.

Read top to bottom:
1. `self_check` runs every golden input through every segment and compares with the
   expected outputs the host recorded from torch.
2. `run_single` sends each sample through the segments and stops at the first exit whose
   flag is set (or at the final segment), timing every `session.run` with perf_counter_ns.
3. `run_batch` sends a batch through each segment, drops the samples that exited, and
   passes only the rest on: the batch shrinks as it goes.
Both return plain dicts of lists (the `samples` / `batches` parts of results.json).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from device_runners.backends import Backend
from device_runners.errors import SelfCheckError
from device_runners.manifest import Bundle


def _is_exit_segment(seg: dict[str, Any]) -> bool:
    return seg["exit"]["kind"] != "final"


def self_check(bundle: Bundle, backend: Backend, rtol: float = 1e-3, atol: float = 1e-4
               ) -> dict[str, Any]:
    """Every segment on the golden inputs must match torch's outputs recorded at export."""
    golden = bundle.golden()
    tol = bundle.manifest.get("golden", {})
    # formats other than ONNX fp32 may carry their own golden outputs and tolerances
    # (recorded on the host with the same runtime, e.g. int8), under a key prefix
    fmt_tol = tol.get("formats", {}).get(backend.file_format, {})
    prefix = fmt_tol.get("prefix", "")
    tol = {**tol, **fmt_tol}
    rtol, atol = tol.get("rtol", rtol), tol.get("atol", atol)
    conf_atol = tol.get("confidence_atol", 2e-3)
    x = golden["input"]
    worst = 0.0
    for seg in bundle.segments:
        i = seg["index"]
        out = backend.run(i, x)
        for name in seg["outputs"]:
            want, got = golden[f"{prefix}seg{i}/{name}"], out[name]
            if got.shape != want.shape:
                raise SelfCheckError(f"segment {i} output {name!r} has shape {got.shape}, golden "
                                     f"{want.shape}; the runtime does not run this bundle correctly")
            if name in ("prediction", "exit"):
                near = _near_threshold(seg, golden, i, conf_atol, prefix)
                bad = (got != want) & ~near
                if bad.any():
                    raise SelfCheckError(
                        f"segment {i} output {name!r} disagrees with torch on golden samples "
                        f"{np.flatnonzero(bad).tolist()}; the runtime ({backend.version()}) "
                        "computes this graph differently — try another backend or re-export")
            elif want.dtype.kind == "f":
                err = np.abs(got.astype(np.float64) - want)
                lim = (conf_atol if name == "confidence" else atol) + rtol * np.abs(want)
                worst = max(worst, float(err.max()) if err.size else 0.0)
                if (err > lim).any():
                    raise SelfCheckError(
                        f"segment {i} output {name!r} differs from torch by up to {err.max():.3g} "
                        f"(allowed {lim.max():.3g}); the runtime computes this graph "
                        "differently — try another backend or re-export")
        if _is_exit_segment(seg):
            x = out["feature"]
    return {"passed": True, "samples": len(golden["input"]), "max_abs_err": worst,
            "rtol": rtol, "atol": atol}


def _near_threshold(seg: dict[str, Any], golden: dict[str, np.ndarray], i: int,
                    band: float, prefix: str = "") -> np.ndarray:
    """Samples whose confidence is within tolerance of the threshold may flip either way."""
    conf = golden[f"{prefix}seg{i}/confidence"]
    thr = seg["exit"].get("threshold")
    if thr is None:
        return np.zeros(conf.shape, bool)
    return np.abs(conf - thr) <= band


def run_single(bundle: Bundle, backend: Backend, x: np.ndarray, labels: np.ndarray | None,
               no_exit: bool = False, on_sample: Any = None) -> tuple[dict[str, list], bool]:
    """One sample at a time; stops at the first exit that fires unless `no_exit`.

    Returns the records and whether the run completed (Ctrl-C keeps what was done).
    """
    rec: dict[str, list] = {"exit": [], "prediction": [], "confidence": [], "label": [],
                            "segment_latency_ns": []}
    last = len(bundle.segments) - 1
    try:
        _single_loop(bundle, backend, x, labels, no_exit, on_sample, rec, last)
    except KeyboardInterrupt:
        return rec, False
    return rec, True


def _single_loop(bundle: Bundle, backend: Backend, x: np.ndarray, labels: np.ndarray | None,
                 no_exit: bool, on_sample: Any, rec: dict[str, list], last: int) -> None:
    for n in range(len(x)):
        feat = x[n : n + 1]
        lat = []
        for seg in bundle.segments:
            i = seg["index"]
            t0 = time.perf_counter_ns()
            out = backend.run(i, feat)
            lat.append(time.perf_counter_ns() - t0)
            if i == last or (not no_exit and bool(out["exit"][0])):
                break
            feat = out["feature"]
        rec["exit"].append(i)
        rec["prediction"].append(int(out["prediction"][0]))
        rec["confidence"].append(float(out["confidence"][0]))
        rec["label"].append(None if labels is None else int(labels[n]))
        rec["segment_latency_ns"].append(lat)
        if on_sample is not None:
            on_sample()


def run_batch(bundle: Bundle, backend: Backend, x: np.ndarray, labels: np.ndarray | None,
              batch_size: int = 32, no_exit: bool = False, on_batch: Any = None
              ) -> tuple[dict[str, list], list[dict[str, Any]], bool]:
    """Batches that shrink: each segment runs only on the samples that have not exited.

    Returns sample records, per-batch records and whether the run completed.
    """
    n_all = len(x)
    exit_at = np.full(n_all, -1, np.int64)
    pred = np.zeros(n_all, np.int64)
    conf = np.zeros(n_all, np.float32)
    batches = []
    last = len(bundle.segments) - 1
    done_upto = 0
    try:
        for start in range(0, n_all, batch_size):
            _one_batch(bundle, backend, x, start, min(start + batch_size, n_all), no_exit, last,
                       exit_at, pred, conf, batches)
            done_upto = min(start + batch_size, n_all)
            if on_batch is not None:
                on_batch()
        complete = True
    except KeyboardInterrupt:
        complete = False
    lab = [None] * done_upto if labels is None else [int(v) for v in labels[:done_upto]]
    rec = {"exit": exit_at[:done_upto].tolist(), "prediction": pred[:done_upto].tolist(),
           "confidence": conf[:done_upto].astype(float).tolist(), "label": lab}
    return rec, batches, complete


def _one_batch(bundle: Bundle, backend: Backend, x: np.ndarray, start: int, stop: int,
               no_exit: bool, last: int, exit_at: np.ndarray, pred: np.ndarray,
               conf: np.ndarray, batches: list[dict[str, Any]]) -> None:
    idx = np.arange(start, stop)
    feat = x[idx]
    lat, active = [], []
    for seg in bundle.segments:
        i = seg["index"]
        active.append(len(idx))
        t0 = time.perf_counter_ns()
        out = backend.run(i, feat)
        lat.append(time.perf_counter_ns() - t0)
        done = np.ones(len(idx), bool) if i == last else (
            np.zeros(len(idx), bool) if no_exit else out["exit"].astype(bool))
        exit_at[idx[done]] = i
        pred[idx[done]] = out["prediction"][done]
        conf[idx[done]] = out["confidence"][done]
        if i == last or done.all():
            break
        idx, feat = idx[~done], out["feature"][~done]
    batches.append({"size": stop - start, "active": active, "segment_latency_ns": lat})


def warm_up(bundle: Bundle, backend: Backend, x: np.ndarray, runs: int) -> None:
    """Run every segment `runs` times on one sample (allocations, caches, lazy init)."""
    for _ in range(runs):
        feat = x[:1]
        for seg in bundle.segments:
            out = backend.run(seg["index"], feat)
            if _is_exit_segment(seg):
                feat = out["feature"]
