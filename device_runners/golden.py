"""The one self-check: a bundle's golden inputs through this runtime must give torch's outputs.

The host records, at export, a few real inputs and what every segment produced for them
in torch (`golden.npz`). Before measuring anything the device feeds each segment the
inputs torch gave it and compares every output with one rule set:

* float outputs (`feature`, `logits`) within `atol + rtol·|want|`;
* `confidence` within `confidence_atol`;
* decisions (`prediction`, `exit`, `exit_mask`) exactly, except for units whose
  confidence lies within `confidence_atol` of their threshold (they may flip either way).

Golden key layout (one per granularity, written by `converters.bundle`):
* `sample`: `input` (N, ...) and `{prefix}seg{i}/{output}`; segment i > 0 is fed
  `{prefix}seg{i-1}/feature`. Formats other than ONNX fp32 (int8) may carry their own
  outputs and tolerances under `golden.formats[format]` with a key prefix.
* `position` (language models): `input` (N, L + n) prompts then −1 slots, and per prompt
  n and mode (each exit policy, `calm` and `verify`, and `full` = no exits)
  `p{n}/{mode}/tokens|exits|margin`: decoding with the bundle's policy and at full depth
  through `execute` must give the same tokens and exits up to the first position where
  torch's confidence came within `confidence_atol` of a threshold (a flip there changes
  every later position).
* `token`: `input` (N, ...) and per input n `img{n}/seg{i}/{output}`, `img{n}/seg{i}/idx`
  (the running tokens torch fed segment i), plus the end-to-end `img{n}/token_exit` and
  `img{n}/prediction`, which `execute` must reproduce to `min_exit_agreement` /
  `min_pixel_agreement`. int8 formats carry the same keys recorded with their own
  runtime on the host under their prefix (`onnx-int8/img{n}/…`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from device_runners.backends import Backend
from device_runners.decode import decode
from device_runners.errors import SelfCheckError
from device_runners.executor import execute, granularity, token_positions
from device_runners.manifest import Bundle

DECISIONS = ("prediction", "exit", "exit_mask")
Case = tuple[str, int, dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray | None]


def self_check(bundle: Bundle, backend: Backend) -> dict[str, Any]:
    """Raise `SelfCheckError` unless this runtime reproduces the golden outputs."""
    golden = bundle.golden()
    tol = tolerances(bundle, backend)
    if granularity(bundle) == "position":
        return _position_check(bundle, backend, golden, tol)
    cases = (_sample_cases if granularity(bundle) == "sample" else _token_cases)(
        bundle, golden, tol)
    worst = 0.0
    for where, index, feeds, want, near in cases:
        got = backend.run(index, feeds)
        for name, expected in want.items():
            worst = max(worst, _compare(f"{where} segment {index} output {name!r}", name,
                                        got[name], expected, near, tol, backend))
    report = {"passed": True, "samples": len(golden["input"]), "max_abs_err": worst,
              "rtol": tol["rtol"], "atol": tol["atol"]}
    if granularity(bundle) == "token":
        report.update(_token_agreement(bundle, backend, golden, tol))
    return report


def tolerances(bundle: Bundle, backend: Backend) -> dict[str, Any]:
    """The golden tolerances and key prefix for the backend's file format."""
    g = bundle.manifest.get("golden") or {}
    fmt = (g.get("formats") or {}).get(backend.file_format, {})
    tol = {"atol": 1e-4, "rtol": 1e-3, "confidence_atol": 2e-3, "prefix": "", **g, **fmt}
    return tol


def _compare(where: str, name: str, got: np.ndarray, want: np.ndarray, near: np.ndarray | None,
             tol: dict[str, Any], backend: Backend) -> float:
    if got.shape != want.shape:
        raise SelfCheckError(f"{where} has shape {got.shape}, golden {want.shape}; the runtime "
                             "does not run this bundle correctly — re-export it")
    if name in DECISIONS:
        bad = got != want
        if near is not None:
            bad &= ~near
        if bad.any():
            raise SelfCheckError(
                f"{where} disagrees with torch on {int(bad.sum())} unit(s) away from the "
                f"thresholds; the runtime ({backend.version()}) computes this graph "
                "differently — try another backend or re-export")
        return 0.0
    if want.dtype.kind != "f":
        return 0.0
    err = np.abs(got.astype(np.float64) - want)
    lim = (tol["confidence_atol"] if name == "confidence" else tol["atol"]) + tol["rtol"] * np.abs(want)
    if (err > lim).any():
        raise SelfCheckError(f"{where} differs from torch by up to {err.max():.3g} (allowed "
                             f"{lim.max():.3g}); the runtime computes this graph differently "
                             "— try another backend or re-export")
    return float(err.max()) if err.size else 0.0


def _sample_cases(bundle: Bundle, g: dict[str, np.ndarray], tol: dict[str, Any]) -> Iterator[Case]:
    prefix = tol["prefix"]
    x = g["input"]
    for seg in bundle.segments:
        i = seg["index"]
        want = {name: g[f"{prefix}seg{i}/{name}"] for name in seg["outputs"]}
        near = None
        thr = seg["exit"].get("threshold")
        own = seg["exit"].get("thresholds_by_format") or {}  # e.g. int8 files' own thresholds
        if prefix.rstrip("/") in own:
            thr = own[prefix.rstrip("/")]
        if thr is not None and "confidence" in want:
            near = np.abs(want["confidence"] - thr) <= tol["confidence_atol"]
        yield "golden", i, {seg["inputs"][0]: x}, want, near
        if "feature" in want:
            x = want["feature"]


def _token_cases(bundle: Bundle, g: dict[str, np.ndarray], tol: dict[str, Any]) -> Iterator[Case]:
    thresholds = (bundle.manifest.get("segmentation") or {}).get("thresholds")
    last = len(bundle.segments) - 1
    p = tol["prefix"]
    for n in range(len(g["input"])):
        if f"{p}img{n}/seg0/logits" not in g:  # a monolithic bundle: end to end only
            return
        image = np.ascontiguousarray(g["input"][n : n + 1])
        for seg in bundle.segments:
            i = seg["index"]
            names = seg["inputs"]
            if i == 0:
                feeds = {names[0]: image}
            else:
                feature, idx = g[f"{p}img{n}/seg{i - 1}/feature"], g[f"{p}img{n}/seg{i}/idx"]
                feeds = {names[0]: feature, names[1]: idx,
                         names[2]: token_positions(idx, 1, int(np.prod(feature.shape[2:])))}
            want = {name: g[f"{p}img{n}/seg{i}/{name}"] for name in seg["outputs"]}
            near = _near_class_thresholds(want["logits"], None if i == last else thresholds,
                                          tol["confidence_atol"])
            yield f"golden image {n}", i, feeds, want, near


def _near_class_thresholds(logits: np.ndarray, thresholds: list[float] | None,
                           band: float) -> np.ndarray:
    """Tokens whose decision max_k(softmax_k − T_k) ≥ 0 is within `band` of flipping."""
    if thresholds is None:
        return np.zeros(len(logits), bool)
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return np.abs((p - np.asarray(thresholds)).max(axis=1)) <= band


def _token_agreement(bundle: Bundle, backend: Backend, g: dict[str, np.ndarray],
                     tol: dict[str, Any]) -> dict[str, float]:
    """The whole chain through `execute` must reproduce torch's token exits and class map."""
    exit_agree = pix_agree = 1.0
    min_exit, min_pix = tol.get("min_exit_agreement", 1.0), tol.get("min_pixel_agreement", 1.0)
    p = tol["prefix"]
    for n in range(len(g["input"])):
        out = execute(bundle, backend, np.ascontiguousarray(g["input"][n : n + 1]))
        exit_agree = min(exit_agree, float((out.exit[0] == g[f"{p}img{n}/token_exit"]).mean()))
        pix_agree = min(pix_agree, float((out.prediction[0] == g[f"{p}img{n}/prediction"]).mean()))
        if exit_agree < min_exit or pix_agree < min_pix:
            raise SelfCheckError(
                f"golden image {n}: token exits agree {exit_agree:.4f} (min {min_exit}), pixels "
                f"{pix_agree:.4f} (min {min_pix}) with torch; this runtime does not reproduce the "
                "bundle — re-export or use another runtime")
    return {"exit_agreement": exit_agree, "pixel_agreement": pix_agree}


def _position_check(bundle: Bundle, backend: Backend, g: dict[str, np.ndarray],
                    tol: dict[str, Any]) -> dict[str, Any]:
    """Golden prompts decoded through the executor: tokens and exits as torch's."""
    n_new = int(bundle.manifest["golden"]["new_tokens"])
    compared = 0
    policy = bundle.manifest["language_model"].get("exit_policy", "calm")
    for i, prompt in enumerate(g["prompts"]):
        for mode in (policy, "full"):
            d = decode(bundle, backend, prompt, n_new, mode == "full")
            key = f"p{i}/{mode}"
            near = np.flatnonzero(g[f"{key}/margin"] <= tol["confidence_atol"])
            upto = int(near[0]) + 1 if len(near) else n_new  # the near position may flip
            got = np.stack((d.prediction, d.exit))[:, :upto]
            want = np.stack((g[f"{key}/tokens"], g[f"{key}/exits"]))[:, :upto]
            bad = np.flatnonzero((got != want).any(0))
            if len(bad) and (not len(near) or bad[0] < upto - 1):
                raise SelfCheckError(
                    f"golden prompt {i} ({mode}): token or exit at new position {bad[0]} differs "
                    f"from torch's (got {got[0, :8].tolist()}…, want {want[0, :8].tolist()}…) "
                    f"away from the thresholds; this runtime ({backend.version()}) does not "
                    "reproduce the bundle — check the onnxruntime version or re-export")
            compared += upto
    return {"passed": True, "samples": len(g["prompts"]), "new_tokens": n_new,
            "compared_positions": compared, "confidence_atol": tol["confidence_atol"]}
