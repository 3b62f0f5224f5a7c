"""Write a segmentation edge-ee bundle: one bundle per threshold configuration.

Why one bundle per configuration (and not one folder with all configs): a bundle is the
unit the device verifies, self-checks and names in its results (`manifest_sha256`), and
the decision rule (the thresholds) is part of the graphs; one configuration per bundle
keeps "which rule produced these numbers" unambiguous, and the report compares
configurations by putting several results side by side, as for classification. The
graphs are small (≈ 0.5 MB per bundle), so the duplicated files cost little.

Contents: `manifest.json` (the contract of `device_runners.manifest`, `model.task =
"segmentation"`, plus a `segmentation` section: token grid, void label, per-class
thresholds, the per-token cost model, the `assemble` graph), `seg{s}.onnx` per exit and
`assemble.onnx` — or one `full.onnx` for the monolithic network — in every requested
format (`onnx`, `tflite`; `seg{s}.int8.onnx` with `int8`), and `golden.npz` (real
images, every segment's torch outputs on torch's own remaining-token index, and the
end-to-end token exit map and class map; int8 adds its own runtime's under a prefix).
Written into a temporary folder, checked per format with the device code (checksums,
golden self-check, agreement with torch's gathered execution on real images) and only
then renamed into place; a failure leaves nothing behind.

TFLite: litert-torch cannot lower the dynamic running-token count, so each token segment
is one .tflite file with a signature per fixed index length (1/16, 1/8, ... 1 of the
grid, `TOKEN_BUCKETS`); the device pads `idx` with the spare-row index to the next
length (at most 2x the tokens computed, never more than the whole grid) — see
`converters.spec.Padding` and `edge_ee.segmentation.export`. TFLite graphs have batch 1,
so `--mode batch` runs on ONNX. int8: `edge_ee.segmentation.int8` (ONNX QDQ, TFLite PT2E).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import edge_ee
from converters.bundle import write_bundle
from converters.spec import BundleSpec, Compare, DynamicAxis, Padding, SegmentSpec, image_input
from device_runners.backends import Backend, format_backends, open_backend
from device_runners.errors import BundleError
from device_runners.executor import execute
from device_runners.golden import self_check
from device_runners.manifest import Bundle
from edge_ee.errors import ExportValidationError
from edge_ee.segmentation import int8 as seg_int8
from edge_ee.segmentation.data import CLASS_NAMES, IGNORE_INDEX, MEAN_RGB, STD_RGB
from edge_ee.segmentation.export import (
    SEG0_INPUTS,
    SEG_INPUTS,
    SEG_OUTPUTS,
    Assemble,
    FullNet,
    segment_modules,
)
from edge_ee.segmentation.model import EarlyExitSegNet
from edge_ee.segmentation.pixel_exit import CostModel, check_thresholds, gathered_forward

TOKENS = DynamicAxis("m", min=1)  # the running-token index `idx` (flat over the batch)
BATCH = DynamicAxis("batch", min=1, max=65536)
TOKEN_BUCKETS = 5  # TFLite index lengths: n/16, n/8, n/4, n/2, n (rounded up)
COMPARE = {"feature": Compare("float"), "logits": Compare("float"),
           "exit_mask": Compare("decision"), "prediction": Compare("decision")}


@dataclass(frozen=True)
class SegBundleOptions:
    """Golden I/O size and the tolerances the export and the device self-check use."""

    golden_count: int = 2
    atol: float = 1e-4
    rtol: float = 1e-3
    confidence_atol: float = 2e-3  # exit decisions this close to a threshold may flip
    min_exit_agreement: float = 0.999
    min_pixel_agreement: float = 0.999
    overwrite: bool = False
    formats: tuple[str, ...] = ("onnx",)
    int8: bool = False
    int8_min_exit_agreement: float = 0.90  # int8 chain vs torch fp32 on the validation images
    int8_min_pixel_agreement: float = 0.95


def write_seg_bundle(model: EarlyExitSegNet, out_dir: str | Path, thresholds: np.ndarray | None,
                     validation_images: np.ndarray, calibration: dict[str, Any] | None = None,
                     name: str = "camvid-eeseg", source_sha256: str | None = None,
                     options: SegBundleOptions = SegBundleOptions(),
                     calibration_images: np.ndarray | None = None) -> Path:
    """Export, check and atomically place a bundle; `thresholds=None`: monolithic network.

    validation_images: normalised float32 (N,3,H,W) real images (the first
    `golden_count` become the golden inputs). `options.formats` / `options.int8`: graph
    formats and int8 files (ONNX QDQ, calibrated on `calibration_images`: real,
    normalised training images, not the validation ones).
    """
    out = Path(out_dir)
    if out.exists() and not options.overwrite:
        raise BundleError(f"{out} exists; pass --overwrite or choose another folder")
    vx = np.ascontiguousarray(validation_images, dtype=np.float32)
    if vx.ndim != 4 or len(vx) < 1:
        raise ExportValidationError("validation needs at least one real (N,3,H,W) image")
    model.eval()
    cfg = model.config
    t = None if thresholds is None else check_thresholds(thresholds, cfg.num_classes)
    kind = (calibration or {}).get("kind", "thresholds") if t is not None else "monolithic"
    cost = CostModel.of(model)
    specs = _specs(model, t, vx, cost, kind)
    extra = {} if t is None else {"assemble": _assemble_spec(model)}
    gx = vx[:max(1, options.golden_count)]
    quantize = None
    if options.int8:
        if t is None:
            raise ExportValidationError("int8 is for early-exit bundles (cbt/single); the "
                                        "monolithic baseline stays fp32 — drop --int8")
        cal_x = seg_int8.check_images(calibration_images, vx.shape[1:])

        def quantize(tmp: Path, segments: list[dict[str, Any]]) -> dict[str, Any]:
            return seg_int8.quantize_all(tmp, segments, specs, cal_x, cost.num_tokens,
                                         tuple(options.formats))

    def golden(draft: Bundle, formats: tuple[str, ...]) -> tuple[dict, dict]:
        arrays = _golden(model, t, gx)
        per_format = {}
        for fmt in formats:
            if fmt.endswith("-int8"):
                backend = open_backend(draft, format_backends()[fmt])
                arrays.update(seg_int8.runtime_golden(backend, len(specs), gx, model.config,
                                                      f"{fmt}/"))
                per_format[fmt] = seg_int8.golden_tolerance(fmt)
        return arrays, {
            "atol": options.atol, "rtol": options.rtol, "confidence_atol": options.confidence_atol,
            "min_exit_agreement": options.min_exit_agreement,
            "min_pixel_agreement": options.min_pixel_agreement,
            **({"formats": per_format} if per_format else {})}

    def check(bundle: Bundle, fmt: str) -> tuple[dict, dict]:
        backend = open_backend(bundle, format_backends()[fmt])
        record = self_check(bundle, backend)
        if fmt.endswith("-int8"):
            return record, seg_int8.validate_int8(model, bundle, backend, t, vx, options)
        return record, validate_against_torch(model, bundle, backend, t, vx, options)

    return write_bundle(
        specs, _bundle_spec(model, t, kind, name, source_sha256), out, golden=golden,
        check=check, formats=options.formats,
        task_section={"segmentation": _section(model, t, kind, cost, options.formats)},
        extra_graphs=extra, calibration=calibration, overwrite=options.overwrite,
        quantize=quantize,
        cost={"full_flops": cost.full_flops(),
              "total_flops_all_segments": sum(int(s.flops) for s in specs)})


def _bundle_spec(model: EarlyExitSegNet, t: torch.Tensor | None, kind: str, name: str,
                 source_sha256: str | None) -> BundleSpec:
    cfg = model.config
    h, w = cfg.image_hw
    return BundleSpec(
        name=name, classes=tuple(CLASS_NAMES[:cfg.num_classes]),
        input=image_input((3, h, w), tuple(MEAN_RGB.tolist()), tuple(STD_RGB.tolist()),
                          name="image",
                          normalisation="(x/255 - mean) / std per RGB channel"),
        task="segmentation", granularity="token", source_sha256=source_sha256,
        model={"variant": "monolithic" if t is None else kind,
               "architecture": {k: list(v) if isinstance(v, tuple) else v
                                for k, v in asdict(cfg).items()}},
        provenance={"edge_ee_version": edge_ee.__version__})


def _section(model: EarlyExitSegNet, t: torch.Tensor | None, kind: str,
             cost: CostModel, formats: tuple[str, ...] = ("onnx",)) -> dict[str, Any]:
    """The manifest's `segmentation` section (read by the device's token executor)."""
    cfg = model.config
    h, w = cfg.image_hw
    return {
        "image_hw": [h, w], "token_hw": list(cfg.token_hw), "token_stride": 4,
        "num_exits": cfg.num_exits, "monolithic": t is None, "void_label": IGNORE_INDEX,
        "thresholds": None if t is None else [float(v) for v in t], "threshold_kind": kind,
        "exit_rule": "a token stops at exit n when OR_k softmax_k >= T_k; its logits there "
                     "are final; stopped tokens keep their last feature for later mixes",
        "assemble": None if t is None else {"files": {f: f"assemble.{f}" for f in formats},
                                            "inputs": ["logits"], "outputs": ["prediction"]},
        "batch": "graphs take B images; tokens are numbered flat, image-major (b*h*w + t); "
                 "TFLite files have batch 1",
        "tflite_padding": "TFLite token segments carry one signature per idx length "
                          "(segments[].padding.sizes): litert-torch cannot lower a dynamic "
                          "token count; idx is padded with the spare row (padding.value) and "
                          "logits/exit_mask trimmed",
        "cost": {"stem_flops": cost.stem_flops, "dense_flops": list(cost.dense_flops),
                 "per_token_flops": list(cost.per_token_flops), "num_tokens": cost.num_tokens,
                 "full_flops": cost.full_flops(),
                 "rule": "FLOPs(image) = stem + sum over exits s reached by any token of "
                         "(dense_flops[s] + tokens_reaching_s * per_token_flops[s])"},
    }


def _specs(model: EarlyExitSegNet, t: torch.Tensor | None, vx: np.ndarray, cost: CostModel,
           kind: str) -> list[SegmentSpec]:
    """One spec per graph (FLOPs with every token active)."""
    cfg = model.config
    img = torch.from_numpy(vx[:1])
    n = cost.num_tokens
    if t is None:
        full = FullNet(model).eval()
        return [SegmentSpec(
            full, {"image": img}, tuple(SEG0_INPUTS), ("prediction",), int(cost.full_flops()),
            sum(p.numel() for p in model.parameters()),
            {"kind": "final", "point": f"exit{cfg.num_exits - 1}", "threshold": None,
             "outputs": {"prediction": "int64 (B,H,W) class map"}},
            list(range(cfg.num_exits)), COMPARE, {"image": {0: BATCH}}, name="full",
            manifest={"dense_flops": int(cost.stem_flops + sum(cost.dense_flops)),
                      "per_token_flops": int(sum(cost.per_token_flops))})]
    mods = segment_modules(model, t)
    with torch.no_grad():
        x0 = model.stem(img)
    example_idx = torch.arange(0, n, 3)
    sizes = tuple(sorted({-(-n // 2 ** k) for k in range(TOKEN_BUCKETS)}))
    padding = Padding("idx", sizes, n, ("logits", "exit_mask"))
    specs = []
    for s, mod in enumerate(mods):
        last = s == len(mods) - 1
        dense = cost.dense_flops[s] + (cost.stem_flops if s == 0 else 0)
        example = {"image": img} if s == 0 else {
            "feature_in": x0, "idx": example_idx,  # pos 0: valid for any padded idx length
            "pos": torch.zeros(1, n, dtype=torch.int64)}
        specs.append(SegmentSpec(
            mod, example, tuple(SEG0_INPUTS if s == 0 else SEG_INPUTS), tuple(SEG_OUTPUTS),
            int(dense + n * cost.per_token_flops[s]), sum(p.numel() for p in mod.parameters()),
            {"kind": "final" if last else kind, "point": f"exit{s}", "threshold": None,
             "thresholds": None if last else [float(v) for v in t],
             "granularity": "token (4x4 pixels)",
             "outputs": {"feature": "float32 (B,C,h,w) grid to pass on",
                         "logits": "float32 (M,K) of the tokens run",
                         "exit_mask": "bool (M,): OR_k softmax_k >= T_k (all true last)"}},
            [s], COMPARE, {"image": {0: BATCH}} if s == 0 else
            {"feature_in": {0: BATCH}, "idx": {0: TOKENS}, "pos": {0: BATCH}},
            passes_on=None if last else "feature",
            manifest={"dense_flops": int(dense), "per_token_flops": int(cost.per_token_flops[s])},
            padding=None if s == 0 else padding))
    return specs


def _assemble_spec(model: EarlyExitSegNet) -> SegmentSpec:
    cfg = model.config
    logits = torch.zeros(1, cfg.num_classes, *cfg.token_hw)
    return SegmentSpec(Assemble(cfg.image_hw).eval(), {"logits": logits}, ("logits",),
                       ("prediction",), 0, 0, {"kind": "assemble"}, [], COMPARE,
                       {"logits": {0: BATCH}})


def _golden(model: EarlyExitSegNet, t: torch.Tensor | None, gx: np.ndarray) -> dict[str, np.ndarray]:
    """Golden inputs, every segment's torch outputs (on torch's remaining tokens), end to end."""
    cfg = model.config
    n = cfg.token_hw[0] * cfg.token_hw[1]
    g: dict[str, np.ndarray] = {"input": gx}
    mods = None if t is None else segment_modules(model, t)
    with torch.no_grad():
        for i in range(len(gx)):
            img = torch.from_numpy(gx[i:i + 1])
            if mods is None:
                g[f"img{i}/prediction"] = FullNet(model).eval()(img)[0].numpy()
                g[f"img{i}/token_exit"] = np.full(n, cfg.num_exits - 1, np.int64)
                continue
            for s, (feeds, outs) in enumerate(seg_int8.torch_chain(mods, img, n)):
                if s > 0:
                    g[f"img{i}/seg{s}/idx"] = feeds["idx"].numpy()
                for k, v in outs.items():
                    g[f"img{i}/seg{s}/{k}"] = v.numpy()
            ref = gathered_forward(model, img, t)
            g[f"img{i}/token_exit"] = ref.exit_index.reshape(-1).numpy()
            g[f"img{i}/prediction"] = ref.full_res_prediction(cfg.image_hw)[0].numpy()
    return g


def validate_against_torch(model: EarlyExitSegNet, bundle: Bundle, backend: Backend,
                           t: torch.Tensor | None,
                           vx: np.ndarray, options: SegBundleOptions) -> dict[str, Any]:
    """Device pipeline vs torch's gathered execution on real images; raises if they differ."""
    cfg = model.config
    worst, same, pix, total_tok, total_pix = 0.0, 0, 0, 0, 0
    with torch.no_grad():
        for i in range(len(vx)):
            img = torch.from_numpy(vx[i:i + 1])
            got = execute(bundle, backend, np.ascontiguousarray(vx[i:i + 1]))
            got_exit, got_pred = got.exit[0], got.prediction[0]
            if t is None:
                ref_pred = FullNet(model).eval()(img)[0].numpy()
            else:
                ref = gathered_forward(model, img, t)
                ref_pred = ref.full_res_prediction(cfg.image_hw)[0].numpy()
                ref_e = ref.exit_index.reshape(-1).numpy()
                ref_l = ref.logits[0].reshape(cfg.num_classes, -1).t().numpy()
                eq = ref_e == got_exit
                same += int(eq.sum())
                total_tok += eq.size
                if eq.any():
                    got_l = got.extra["token_logits"][0]
                    worst = max(worst, float(np.abs(ref_l[eq] - got_l[eq]).max()))
            pix += int((ref_pred == got_pred).sum())
            total_pix += ref_pred.size
    exit_agree = same / total_tok if total_tok else 1.0
    pix_agree = pix / total_pix
    if worst > options.atol or exit_agree < options.min_exit_agreement or \
            pix_agree < options.min_pixel_agreement:
        raise ExportValidationError(
            f"{backend.name} bundle vs torch on {len(vx)} images: max |Δlogits| {worst:.2e} (atol "
            f"{options.atol}), token exit agreement {exit_agree:.5f} (min "
            f"{options.min_exit_agreement}), pixel agreement {pix_agree:.5f} (min "
            f"{options.min_pixel_agreement}); the export is wrong — re-export in eval mode")
    return {"images": len(vx), "max_abs_logit_diff": worst, "exit_agreement": exit_agree,
            "pixel_agreement": pix_agree, "reference": "torch gathered_forward"}
