"""int8 segmentation bundles (ONNX QDQ, TFLite PT2E) and the token chain shared by golden and calibration.

Each segment graph is quantised on its own with `converters.quantize.quantize_onnx`
(uint8 activations per tensor, int8 per-channel weights, MinMax), calibrated on the
feeds torch gives it on real training images: segment 0 the image, segment s >= 1 the
feature grid and the running-token index torch's gathered chain reaches it with. The
exit heads (the `head` scope: one Linear per exit) stay float: the per-class CBT
thresholds (0.9 - 0.998 on softmax) sit where an int8 head would flip many tokens. The
thresholds are the fp32 bundle's, unchanged (baked into the graphs as constants).

The golden self-check of an int8 file compares with that file's own outputs, recorded
on the host with onnxruntime (`runtime_golden`, under a `onnx-int8/` key prefix, looser
tolerances); the export itself is validated end to end against torch fp32
(`validate_int8`): token exit agreement and pixel agreement on the validation images.
With TFLite among the formats, `seg{s}.int8.tflite` too: PT2E (torchao) with
litert-torch's quantizer, exit heads float, one signature per padded index length, each
calibrated on the same images' running tokens cut or padded to its length.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.errors import QuantizationError
from converters.formats.tflite import export_spec_int8
from converters.progress import progress
from converters.quantize import QUANT_METHODS, Int8Tolerance, quantize_onnx
from converters.spec import SegmentSpec
from device_runners.backends import Backend
from device_runners.executor import token_positions
from device_runners.manifest import Bundle
from edge_ee.errors import ExportValidationError
from edge_ee.segmentation.export import SEG_OUTPUTS
from edge_ee.segmentation.model import SegNetConfig
from edge_ee.segmentation.pixel_exit import gathered_forward

Feeds = dict[str, torch.Tensor]


@torch.no_grad()
def torch_chain(mods: list[nn.Module], img: torch.Tensor, n: int
                ) -> Iterator[tuple[Feeds, dict[str, torch.Tensor]]]:
    """(feeds, outputs) of every segment for one image along torch's own exits. A segment
    that no token reaches is still fed every token (so every graph gets checked)."""
    idx = torch.arange(n)
    feat = None
    for s, mod in enumerate(mods):
        if s == 0:
            feeds = {"image": img}
        else:
            use = idx if idx.numel() else torch.arange(n)
            feeds = {"feature_in": feat, "idx": use,
                     "pos": torch.from_numpy(token_positions(use.numpy(), 1, n))}
        out = dict(zip(SEG_OUTPUTS, mod(*feeds.values()), strict=True))
        yield feeds, out
        if idx.numel():
            idx = idx[~out["exit_mask"]]
        feat = out["feature"]


def check_images(x: np.ndarray | None, shape: tuple[int, ...], min_images: int = 2) -> np.ndarray:
    """Calibration images as float32 (N, 3, H, W), or a QuantizationError saying why not."""
    if x is None:
        raise QuantizationError("int8 needs calibration images: pass real, normalised training "
                                "images (edge-ee seg-build --int8 uses --int8-calib-images)")
    x = np.asarray(x)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape) or x.dtype.kind != "f":
        raise QuantizationError(f"calibration images have shape {x.shape} ({x.dtype}); pass "
                                f"normalised float32 (N, {', '.join(map(str, shape))})")
    if len(x) < min_images or not np.isfinite(x).all():
        raise QuantizationError(f"int8 needs at least {min_images} finite calibration images, "
                                f"got {len(x)}")
    return np.ascontiguousarray(x, dtype=np.float32)


def quantize_all(tmp: Path, segments: list[dict[str, Any]], specs: list[SegmentSpec],
                 cal_x: np.ndarray, n: int, formats: tuple[str, ...]) -> dict[str, Any]:
    """`seg{s}.int8.onnx` (and `seg{s}.int8.tflite` when TFLite is among `formats`) beside
    every fp32 segment (`n` tokens per image); the manifest's `quantization` section."""
    mods = [sp.module for sp in specs]
    feeds: list[list[dict[str, np.ndarray]]] = [[] for _ in mods]
    for i in progress(range(len(cal_x)), desc="int8 calibration feeds", unit="image"):
        for s, (f, _) in enumerate(torch_chain(mods, torch.from_numpy(cal_x[i:i + 1]), n)):
            feeds[s].append({k: v.numpy() for k, v in f.items()})
    recs = [{"segment": s, "heads": "float"} for s in range(len(segments))]
    out: dict[str, Any] = {"calibration_images": len(cal_x), "heads_policy": "float",
                           "thresholds": "the fp32 bundle's per-class thresholds, unchanged",
                           "formats": {}}
    for s, seg in enumerate(progress(segments, desc="int8 onnx", unit="segment")):
        name = f"{seg['name']}.int8.onnx"
        quantize_onnx(tmp / seg["files"]["onnx"], tmp / name, feeds[s], float_heads=True)
        seg["files"]["onnx-int8"] = name
    out["formats"]["onnx-int8"] = {
        **QUANT_METHODS["onnx"], "segments": recs,
        "float_heads": "the exit head nodes (one Linear per exit, `head` scope) are excluded "
                       "from quantisation and compute float32"}
    if "tflite" not in formats:
        return out
    for s, seg in enumerate(progress(segments, desc="int8 tflite", unit="segment")):
        name = f"{seg['name']}.int8.tflite"
        export_spec_int8(specs[s], _by_length(feeds[s], specs[s], n), tmp / name)
        seg["files"]["tflite-int8"] = name
    out["formats"]["tflite-int8"] = {
        **QUANT_METHODS["tflite"], "segments": recs,
        "signatures": "each padded index length calibrated on its own, on the same images "
                      "(the running tokens of each, cut to that length)"}
    return out


def _by_length(feeds: list[dict[str, np.ndarray]], spec: SegmentSpec, n: int
               ) -> dict[int | None, list[dict[str, np.ndarray]]]:
    """Calibration feeds per TFLite signature: idx cut or padded to each length, pos
    recomputed so the feed stays a valid running set."""
    if spec.padding is None:
        return {None: feeds}
    out: dict[int | None, list[dict[str, np.ndarray]]] = {}
    for size in spec.padding.sizes:
        out[size] = []
        for f in feeds:
            use = f["idx"][:size]
            idx = np.concatenate([use, np.full(size - len(use), spec.padding.value, np.int64)])
            out[size].append({**f, "idx": idx, "pos": token_positions(use, 1, n)})
    return out


def runtime_golden(backend: Backend, n_segments: int, gx: np.ndarray, cfg: SegNetConfig,
                   prefix: str) -> dict[str, np.ndarray]:
    """The golden keys of `device_runners.golden` recorded with `backend` itself (its own
    features and running tokens forward), end to end included, under `prefix`."""
    n = cfg.token_hw[0] * cfg.token_hw[1]
    g: dict[str, np.ndarray] = {}
    for i in range(len(gx)):
        idx = np.arange(n, dtype=np.int64)
        logits = np.zeros((n, cfg.num_classes), np.float32)
        exits = np.full(n, n_segments - 1, np.int64)
        feat = None
        for s in range(n_segments):
            p = f"{prefix}img{i}/seg{s}/"
            if s == 0:
                out = backend.run(0, {"image": np.ascontiguousarray(gx[i:i + 1])})
            else:
                use = idx if len(idx) else np.arange(n, dtype=np.int64)
                g[p + "idx"] = use
                out = backend.run(s, {"feature_in": feat, "idx": use,
                                      "pos": token_positions(use, 1, n)})
            g.update({p + k: v for k, v in out.items()})
            if len(idx):
                m = out["exit_mask"].astype(bool)
                logits[idx[m]] = out["logits"][m]
                exits[idx[m]] = s
                idx = idx[~m]
            feat = out["feature"]
        grid = np.ascontiguousarray(logits.T.reshape(1, cfg.num_classes, *cfg.token_hw))
        g[f"{prefix}img{i}/token_exit"] = exits
        g[f"{prefix}img{i}/prediction"] = backend.run("assemble", {"logits": grid})["prediction"][0]
    return g


def golden_tolerance(fmt: str, tol: Int8Tolerance = Int8Tolerance()) -> dict[str, Any]:
    """The device's self-check of an int8 format against its own recorded outputs."""
    return {"prefix": f"{fmt}/", "atol": tol.golden_atol, "rtol": tol.golden_rtol,
            "confidence_atol": tol.golden_confidence_atol, "min_exit_agreement": 0.98,
            "min_pixel_agreement": 0.98}


def validate_int8(model: nn.Module, bundle: Bundle, backend: Backend, t: torch.Tensor,
                  vx: np.ndarray, options: Any) -> dict[str, Any]:
    """The int8 chain through the device executor vs torch fp32's gathered execution: token
    exit and pixel agreement on real images; raises below the options' int8 limits."""
    from device_runners.executor import execute

    same = pix = tok = total = 0
    for i in range(len(vx)):
        ref = gathered_forward(model, torch.from_numpy(vx[i:i + 1]), t)
        got = execute(bundle, backend, np.ascontiguousarray(vx[i:i + 1]))
        same += int((ref.exit_index.reshape(-1).numpy() == got.exit[0]).sum())
        tok += got.exit[0].size
        want = ref.full_res_prediction(model.config.image_hw)[0].numpy()
        pix += int((want == got.prediction[0]).sum())
        total += want.size
    exit_agree, pix_agree = same / tok, pix / total
    report = {"images": len(vx), "exit_agreement": exit_agree, "pixel_agreement": pix_agree,
              "min_exit_agreement": options.int8_min_exit_agreement,
              "min_pixel_agreement": options.int8_min_pixel_agreement,
              "reference": "torch fp32 gathered_forward"}
    if exit_agree < options.int8_min_exit_agreement or pix_agree < options.int8_min_pixel_agreement:
        raise ExportValidationError(
            f"int8 bundle ({backend.name}) vs torch fp32 on {len(vx)} images: token exits agree "
            f"{exit_agree:.4f} (min {options.int8_min_exit_agreement}), pixels {pix_agree:.4f} "
            f"(min {options.int8_min_pixel_agreement}); calibrate on more images "
            "(--int8-calib-images) or ship the fp32 bundle")
    return report
