"""Torch-free runner of segmentation bundles: per-pixel (token) early exit, gathered execution.

A segmentation bundle (`model.task == "segmentation"` in its manifest) holds either one
monolithic graph (image → class map) or one graph per exit plus `assemble`:
segment 0 (stem + stage 0 + exit 0) gives the feature grid, token logits and an exit
mask; the runner keeps a flat index of the remaining tokens, writes the logits of
stopped tokens into a (h*w, K) buffer and feeds the grid plus the index to the next
segment, which runs its MLPs and exit head on those tokens only. When no token remains
the later segments are skipped; `assemble` upsamples the token logits to the class map.
Each token is a 4x4 pixel patch, so the token exit map is the per-pixel exit map.

Also here: reading inputs and labels for a segmentation run (typed errors for wrong
sizes and label values), a per-image confusion matrix, and the golden self-check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device_runners.errors import BackendError, InputSpecError, SelfCheckError
from device_runners.manifest import Bundle, prepare_input

TASK = "segmentation"


def is_segmentation(bundle: Bundle) -> bool:
    return (bundle.manifest.get("model") or {}).get("task") == TASK


def _session(path: Path, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise BackendError("onnxruntime is not installed: pip install onnxruntime") from err
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise BackendError(f"onnxruntime cannot load {path}: {err}; re-export the bundle or "
                           "upgrade onnxruntime") from err


@dataclass(frozen=True)
class PixelOutput:
    """One image: class map (H,W), token exit (h*w,), token logits (h*w,K), timings in ns."""

    prediction: np.ndarray
    token_exit: np.ndarray
    token_logits: np.ndarray | None
    segment_latency_ns: list[int]
    assemble_latency_ns: int
    latency_ns: int


class PixelRunner:
    """onnxruntime sessions of one segmentation bundle; `run` executes one image."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, threads: int = 1) -> None:
        if not is_segmentation(bundle):
            raise BackendError(f"{bundle.root} is not a segmentation bundle")
        seg = bundle.manifest.get("segmentation")
        if not isinstance(seg, dict):
            raise BackendError(f"{bundle.root}: manifest lacks the 'segmentation' section; "
                               "re-export it with edge-ee seg-build")
        self.bundle, self.threads = bundle, threads
        self.h, self.w = seg["token_hw"]
        self.image_hw = tuple(seg["image_hw"])
        self.k = len(bundle.manifest["classes"])
        self.num_exits = int(seg["num_exits"])
        self.monolithic = bool(seg["monolithic"])
        self.sessions = [_session(bundle.segment_path(s["index"], "onnx"), threads)
                         for s in bundle.segments]
        self.assemble = None if self.monolithic else _session(
            bundle.root / seg["assemble"]["files"]["onnx"], threads)

    def version(self) -> str:
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__}"

    def run(self, image: np.ndarray, no_exit: bool = False) -> PixelOutput:
        """image: normalised float32 (1,3,H,W). `no_exit`: every token runs every segment."""
        clock = time.perf_counter_ns
        t_start = clock()
        n = self.h * self.w
        if self.monolithic:
            (pred,) = self.sessions[0].run(None, {"image": image})
            dt = clock() - t_start
            return PixelOutput(pred[0], np.full(n, self.num_exits - 1, np.int64), None, [dt], 0, dt)
        final = np.empty((n, self.k), np.float32)
        token_exit = np.full(n, -1, np.int64)
        idx = np.arange(n, dtype=np.int64)
        last = len(self.sessions) - 1
        lat = []
        feat = None
        for s, sess in enumerate(self.sessions):
            t0 = clock()
            feat, logits, mask = sess.run(None, {"image": image} if s == 0
                                          else {"feature_in": feat, "idx": idx})
            lat.append(clock() - t0)
            if no_exit and s < last:
                continue
            stopped = idx[mask]
            final[stopped] = logits[mask]
            token_exit[stopped] = s
            idx = idx[~mask]
            if idx.size == 0:
                break
        grid = np.ascontiguousarray(final.T.reshape(1, self.k, self.h, self.w))
        t0 = clock()
        (pred,) = self.assemble.run(None, {"logits": grid})  # type: ignore[union-attr]
        t1 = clock()
        return PixelOutput(pred[0], token_exit, final, lat, t1 - t0, t1 - t_start)


# ----------------------------------------------------------------------------- inputs


def load_pixel_input(bundle: Bundle, path: Path | None, limit: int | None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (normalised float32 NCHW) and labels (N,H,W) or None.

    The .npz holds 'x' (uint8 NHWC or float32 NCHW) and optional 'y', or CamVid's own
    'x_test'/'y_test' (so the shared camvid-120x160.npz can be passed as it is).
    """
    if path is None:
        x, y = bundle.golden()["input"], None
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                kx, ky = ("x", "y") if "x" in z.files else ("x_test", "y_test")
                if kx not in z.files:
                    raise InputSpecError(f"{path} has neither 'x' nor 'x_test'; save inputs as "
                                         "np.savez(f, x=images, y=labels)")
                x = z[kx]
                y = z[ky] if ky in z.files else None
        except (OSError, ValueError) as err:
            raise InputSpecError(f"cannot read {path}: {err}; pass an .npz file") from err
    if limit is not None:
        x, y = x[:limit], None if y is None else y[:limit]
    x = prepare_input(bundle, x)
    if y is not None:
        check_labels(bundle, y, len(x))
    return x, y


def check_labels(bundle: Bundle, y: np.ndarray, count: int) -> None:
    """Raise `InputSpecError` unless y is integer (count,H,W) with classes or the void value."""
    seg = bundle.manifest["segmentation"]
    k, void, hw = len(bundle.manifest["classes"]), int(seg["void_label"]), tuple(seg["image_hw"])
    if not np.issubdtype(y.dtype, np.integer):
        raise InputSpecError(f"labels must be integers, got {y.dtype}; save class indices")
    if y.ndim != 3 or tuple(y.shape[1:]) != hw:
        raise InputSpecError(f"labels have shape {y.shape}, the bundle expects (N, {hw[0]}, "
                             f"{hw[1]}); resize them with nearest-neighbour to the image size")
    if len(y) != count:
        raise InputSpecError(f"{count} images but {len(y)} label maps")
    bad = (y != void) & ((y < 0) | (y >= k))
    if bad.any():
        raise InputSpecError(f"labels contain {np.unique(y[bad])[:10].tolist()}, outside classes "
                             f"0..{k - 1} and not the void value {void}; remap them")


def confusion(pred: np.ndarray, labels: np.ndarray, k: int, void: int) -> np.ndarray:
    """(K,K) int64, rows = ground truth, columns = prediction, void pixels skipped."""
    keep = labels != void
    idx = labels[keep].astype(np.int64) * k + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=k * k).reshape(k, k)


# ----------------------------------------------------------------------------- self-check


def _near(logits: np.ndarray, thresholds: list[float] | None, band: float) -> np.ndarray:
    """Tokens whose exit decision max_k(softmax_k − T_k) ≥ 0 is within `band` of flipping."""
    if thresholds is None:
        return np.zeros(len(logits), bool)
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return np.abs((p - np.asarray(thresholds)).max(axis=1)) <= band


def self_check(bundle: Bundle, runner: PixelRunner) -> dict[str, Any]:
    """Each segment on torch's recorded inputs, then the whole chain, must match the golden I/O."""
    g = bundle.golden()
    gm = bundle.manifest["golden"]
    atol, rtol, band = gm["atol"], gm["rtol"], gm["confidence_atol"]
    min_exit, min_pix = gm["min_exit_agreement"], gm["min_pixel_agreement"]
    thr = bundle.manifest["segmentation"]["thresholds"]
    worst, exit_agree, pix_agree = 0.0, 1.0, 1.0
    for i in range(len(g["input"])):
        img = np.ascontiguousarray(g["input"][i:i + 1])
        for s, seg in enumerate([] if runner.monolithic else bundle.segments):
            feeds = {"image": img} if s == 0 else {
                "feature_in": g[f"img{i}/seg{s - 1}/feature"], "idx": g[f"img{i}/seg{s}/idx"]}
            outs = dict(zip(seg["outputs"], runner.sessions[s].run(None, feeds), strict=True))
            for name, got in outs.items():
                want = g[f"img{i}/seg{s}/{name}"]
                if got.shape != want.shape:
                    raise SelfCheckError(f"image {i} segment {s} output {name!r} has shape "
                                         f"{got.shape}, golden {want.shape}; re-export")
                if name == "exit_mask":
                    last = s == len(bundle.segments) - 1
                    bad = (got != want) & ~_near(g[f"img{i}/seg{s}/logits"],
                                                 None if last else thr, band)
                    if bad.any():
                        raise SelfCheckError(
                            f"image {i} segment {s}: {int(bad.sum())} token exit decisions differ "
                            f"from torch away from the thresholds; {runner.version()} computes "
                            "this graph differently — re-export or use another runtime")
                else:
                    err = np.abs(got.astype(np.float64) - want)
                    worst = max(worst, float(err.max()) if err.size else 0.0)
                    if (err > atol + rtol * np.abs(want)).any():
                        raise SelfCheckError(
                            f"image {i} segment {s} output {name!r} differs from torch by up to "
                            f"{err.max():.3g} (atol {atol}, rtol {rtol}); re-export the bundle")
        out = runner.run(img)
        exit_agree = min(exit_agree, float((out.token_exit == g[f"img{i}/token_exit"]).mean()))
        pix_agree = min(pix_agree, float((out.prediction == g[f"img{i}/prediction"]).mean()))
        if exit_agree < min_exit or pix_agree < min_pix:
            raise SelfCheckError(
                f"golden image {i}: token exits agree {exit_agree:.4f} (min {min_exit}), pixels "
                f"{pix_agree:.4f} (min {min_pix}) with torch; this runtime does not reproduce the "
                "bundle — re-export or use another runtime")
    return {"passed": True, "samples": len(g["input"]), "max_abs_err": worst, "rtol": rtol,
            "atol": atol, "exit_agreement": exit_agree, "pixel_agreement": pix_agree}
