"""int8 post-training quantisation of segments (ONNX QDQ and TFLite PT2E) and its validation.

ONNX: `quant_pre_process` (shape inference; ORT's graph optimisation is skipped so node
names and the exporter's `name_scopes` metadata survive), then
`onnxruntime.quantization.quantize_static` — QDQ format, uint8 activations (per tensor,
asymmetric, MinMax) and int8 symmetric per-channel weights (U8S8: MLAS's fast integer
path; S8S8 activations measured 1.2-1.6x slower than fp32 on x86, U8S8 0.5-0.6x on the
ResNet-56 blocks, same error) — calibrated on real samples. The exporter's per-node
debug metadata is dropped from the int8 file once the head nodes are known (it is
~14 KB per segment, a third of a small int8 segment). TFLite: PT2E through
`converters.formats.tflite.export_tflite_int8`.

Exit heads. The LDA/E2CM scores are large numbers whose top-2 differ by little, so an int8
head can change exit decisions. `heads="auto"` quantises each segment both ways and keeps
its head (the nodes under the `head` module: exit head or final classifier head) in float
when quantising it changes any decision (exit flag; prediction for the final segment) on
the validation samples; `"float"` / `"int8"` force one choice. The choice and both
agreement rates go into the manifest. A float ONNX head then stores its large constants
(LDA weights, class means, classifier weights) float16 with a `Cast` back to float32
(folded at session load) unless that changes a decision on the validation samples
(`head_constants`): on ResNet-56 / lda:4 the head bytes halve (int8 bundle 2.7x -> 3.3x
smaller than fp32) and 4 of 25,000 exit flags flip, against 99 for int8 head weights.

Measured limit (ResNet-56, CIFAR-10, lda:4 at <= 1 point drop: 25 exits, max-softmax
thresholds up to 0.99997): ~88 % exit agreement with fp32 whatever the calibration
(MinMax / Entropy / Percentile, 128-640 samples, stratified or not); int8 weights alone
(float activations) give 95 %; 99 % needs <= ~0.1 % relative feature error per segment.

Validation of an int8 chain (against torch fp32, the int8 chain feeding its own features
forward) uses `Int8Tolerance`: feature relative RMS error, prediction and exit agreement
per segment, and end-to-end agreement of (exit taken, prediction).
"""

from __future__ import annotations

import ast
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from converters.errors import ExportValidationError, QuantizationError
from converters.spec import SegmentSpec
from device_runners.backends import Backend, ort_session

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]
HEAD_SCOPE = "head"


@dataclass(frozen=True)
class Int8Tolerance:
    """Looser limits for int8 chains, compared with torch fp32 on real samples."""

    max_feature_rel_rms: float = 0.25  # ‖int8 − fp32‖₂ / ‖fp32‖₂ of each passed-on feature
    min_prediction_agreement: float = 0.90  # per segment, on the samples that exit there
    min_exit_agreement: float = 0.95  # per exit segment
    min_end_to_end_agreement: float = 0.95  # same (exit taken, prediction) as torch
    # golden self-check on the device (int8 kernels differ slightly across CPUs)
    golden_atol: float = 0.25
    golden_rtol: float = 0.05
    golden_confidence_atol: float = 0.05


def check_calibration(x: np.ndarray | None, input_shape: Sequence[int], min_samples: int = 8
                      ) -> np.ndarray:
    """Calibration samples as float32 (N, *input_shape), or a QuantizationError saying why not."""
    if x is None:
        raise QuantizationError("int8 needs calibration samples: pass calibration_x (real, "
                                "normalised inputs of the model, e.g. 256 training images)")
    x = np.asarray(x)
    want = tuple(int(v) for v in input_shape)
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        raise QuantizationError(
            f"calibration samples have shape {x.shape}, the model takes (N, {', '.join(map(str, want))}); "
            "pass normalised model inputs in that layout (NCHW), not raw images")
    if x.dtype.kind != "f":
        raise QuantizationError(f"calibration samples have dtype {x.dtype}; pass normalised float32 "
                                "inputs (ImageSplit.normalised()), not raw uint8 images")
    if len(x) < min_samples:
        raise QuantizationError(f"{len(x)} calibration samples; int8 needs at least {min_samples} "
                                "real samples (256 is a good default)")
    if not np.isfinite(x).all():
        raise QuantizationError("calibration samples contain NaN or inf; pass finite inputs")
    return np.ascontiguousarray(x, dtype=np.float32)


def onnx_head_nodes(model: onnx.ModelProto, feature_output: str | None = "feature") -> list[str]:
    """Names of the nodes under the segment's `head` module (exporter metadata), else, for
    an exit segment, the nodes that the passed-on feature does not depend on."""
    heads = []
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props
                       if p.key == "pkg.torch.onnx.name_scopes"), None)
        if scopes:
            try:
                names = ast.literal_eval(scopes)
            except (ValueError, SyntaxError):
                names = []
            if HEAD_SCOPE in names:
                heads.append(node.name)
    if heads or feature_output is None:
        return heads
    outputs = {o.name for o in model.graph.output}
    if feature_output not in outputs:
        return []
    producer = {o: n for n in model.graph.node for o in n.output}
    needed, stack = set(), [feature_output]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and node.name not in needed:
            needed.add(node.name)
            stack.extend(node.input)
    return [n.name for n in model.graph.node if n.name not in needed]


class _Reader:
    """onnxruntime CalibrationDataReader over an array, in small batches of equal size
    (the histogram calibrators, Entropy / Percentile, stack the batches of a tensor), or
    over a list of feed dicts (multi-input graphs: one dict per call)."""

    def __init__(self, name: str, x: np.ndarray | Sequence[Mapping[str, np.ndarray]],
                 batch: int = 16) -> None:
        if not isinstance(x, np.ndarray):
            self._it = iter([dict(f) for f in x])
            return
        batch = next(b for b in range(max(1, min(batch, len(x))), 0, -1) if len(x) % b == 0)
        self._it = iter([{name: x[s : s + batch]} for s in range(0, len(x), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def strip_debug_metadata(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop per-node exporter metadata (name scopes, stack traces), doc strings and
    intermediate value_info: nothing a runtime reads, a large share of a small segment."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    return model


def half_head_constants(path: Path, out_path: Path, head_nodes: Sequence[str],
                        min_size: int = 64) -> list[str]:
    """Copy of an int8 segment whose float head constants (LDA/E2CM weights, class means,
    classifier weights: float32 initializers of >= `min_size` values that only the head
    reads) are stored float16 and cast back to float32 by a `Cast` node, which onnxruntime
    folds at session load: half the bytes, the head still computes in float32. The
    threshold, biases and other small constants stay float32. `head_nodes`: the head's node
    names (`onnx_head_nodes` of the fp32 file; quantisation keeps them). Returns the
    converted names."""
    model = onnx.load(str(path))
    head = set(head_nodes)
    graph = model.graph
    others = {i for n in graph.node if n.name not in head for i in n.input}
    readers = {i for n in graph.node if n.name in head for i in n.input}
    done, inits, casts = [], [], []
    for init in graph.initializer:
        w = onnx.numpy_helper.to_array(init) if init.data_type == onnx.TensorProto.FLOAT else None
        if (w is None or init.name in others or init.name not in readers or w.size < min_size
                or not np.isfinite(w).all() or np.abs(w).max() > 6e4):
            inits.append(init)
            continue
        inits.append(onnx.numpy_helper.from_array(w.astype(np.float16), init.name + "_fp16"))
        casts.append(onnx.helper.make_node("Cast", [init.name + "_fp16"], [init.name],
                                           name=init.name + "_cast", to=onnx.TensorProto.FLOAT))
        done.append(init.name)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.save(model, str(out_path))
    return done


def quantize_onnx(fp32_path: Path, out_path: Path,
                  calib_x: np.ndarray | Sequence[Mapping[str, np.ndarray]], float_heads: bool,
                  max_calib: int = 256, calibrate_method: str = "MinMax") -> Path:
    """Static QDQ int8 (U8S8: uint8 activations, int8 per-channel weights) of one ONNX
    segment, calibrated on `calib_x` (`calibrate_method`: MinMax | Entropy | Percentile):
    an array for the graph's first input, or a list of feed dicts by input name."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_optimization=True)
            model = onnx.load(str(pre))
            is_exit = any(o.name == "feature" for o in model.graph.output)
            exclude = onnx_head_nodes(model, "feature" if is_exit else None) if float_heads else []
            quantize_static(
                str(pre), str(out_path), _Reader(model.graph.input[0].name, calib_x[:max_calib]),
                quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                calibrate_method=getattr(CalibrationMethod, calibrate_method))
            onnx.save(strip_debug_metadata(onnx.load(str(out_path))), str(out_path))
        except QuantizationError:
            raise
        except Exception as err:  # onnxruntime.quantization raises many kinds
            raise ExportValidationError(f"ONNX int8 quantisation of {fp32_path.name} failed: "
                                        f"{type(err).__name__}: {err}; export without --int8") from err
    return out_path


def onnx_runner(path: Path, out_names: Sequence[str]) -> Runner:
    sess = ort_session(path, 1)
    name = sess.get_inputs()[0].name
    outs = [o.name for o in sess.get_outputs()]
    return lambda x: dict(zip(outs, sess.run(None, {name: x}), strict=True))


def tflite_runner(path: Path, out_names: Sequence[str]) -> Runner:
    from device_runners.backends.tflite import _Graph, load_interpreter_class
    cls, _ = load_interpreter_class()
    interp = cls(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    graph = _Graph(interp, ["x"], list(out_names), None)

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        parts = [graph.run([x[n : n + 1]]) for n in range(len(x))]
        return {k: np.concatenate(v) for (k, _), v in zip(graph.outs, zip(*parts, strict=True),
                                                          strict=True)}
    return run


def _decision(plan: SegmentSpec) -> str:
    return "exit" if plan.is_exit else "prediction"


def quantize_segment(fmt: str, plan: SegmentSpec, fp32_path: Path, out_path: Path,
                     calib_in: np.ndarray, val_in: np.ndarray, val_ref: dict[str, np.ndarray],
                     heads: str = "auto", head_constants: str = "auto",
                     decision_calib: int = 512) -> dict[str, Any]:
    """Write `out_path` (int8 of one segment in `fmt`: 'onnx' | 'tflite') and return what was
    chosen for its head, with the decision agreement (vs torch fp32) of each variant tried.

    `head_constants` (ONNX, float heads): "auto" stores the head's large constants float16
    (`half_head_constants`) when that changes no decision (exit flag, prediction) of the
    float32-constant file on the validation samples; "float32" keeps them as they are.

    Both choices compare decisions on the validation samples plus up to `decision_calib`
    calibration samples: an exit that few samples take (0.1-0.2 % on ResNet-56) shows
    no changed decision on 64 validation samples and thousands of flips later."""
    if heads not in ("auto", "float", "int8"):
        raise QuantizationError(f"heads must be 'auto', 'float' or 'int8', got {heads!r}")
    if head_constants not in ("auto", "float32"):
        raise QuantizationError(f"head_constants must be 'auto' or 'float32', got {head_constants!r}")

    nv = len(val_in)
    dec_in = np.concatenate([val_in, calib_in[:decision_calib]]).astype(np.float32)

    def build(float_heads: bool, path: Path) -> dict[str, np.ndarray]:
        if fmt == "onnx":
            quantize_onnx(fp32_path, path, calib_in, float_heads)
            return onnx_runner(path, plan.output_names)(dec_in)
        from converters.formats.tflite import export_tflite_int8
        export_tflite_int8(plan.module, calib_in, path, float_heads)
        return tflite_runner(path, plan.output_names)(dec_in)

    key = _decision(plan)
    rec: dict[str, Any] = {"decision": key, "decision_samples": len(dec_in)}
    tries = {"auto": (True, False), "float": (True,), "int8": (False,)}[heads]
    results, full = {}, {}
    for float_heads in tries:
        path = out_path if float_heads else out_path.with_name(out_path.name + ".heads-int8")
        got = build(float_heads, path)
        results[float_heads] = (path, got[key])
        full[float_heads] = got
        rec["agreement_heads_float" if float_heads else "agreement_heads_int8"] = float(
            (got[key][:nv] == val_ref[key]).mean())
    if heads == "auto":
        same = bool((results[True][1] == results[False][1]).all())
        keep_int8 = same
        rec["heads_int8_changes_decisions"] = not same
    else:
        keep_int8 = heads == "int8"
    if keep_int8 and results[False][0] != out_path:
        results[False][0].replace(out_path)
    elif True in results and False in results:
        results[False][0].unlink(missing_ok=True)
    rec["heads"] = "int8" if keep_int8 else "float"
    if fmt == "onnx" and not keep_int8:
        rec["head_constants"] = "float32"
        if head_constants == "auto":
            _try_half_constants(plan, fp32_path, out_path, dec_in, val_ref, full[True], rec)
    return rec


def _try_half_constants(plan: SegmentSpec, fp32_path: Path, out_path: Path, val_in: np.ndarray,
                        val_ref: dict[str, np.ndarray], float32_got: dict[str, np.ndarray],
                        rec: dict[str, Any]) -> None:
    half = out_path.with_name(out_path.name + ".fp16-constants")
    head = onnx_head_nodes(onnx.load(str(fp32_path)), "feature" if plan.is_exit else None)
    names = half_head_constants(out_path, half, head)
    if not names:
        half.unlink(missing_ok=True)
        return
    got = onnx_runner(half, plan.output_names)(val_in)
    keys = [k for k in ("exit", "prediction") if k in got]
    same = all(bool((got[k] == float32_got[k]).all()) for k in keys)
    nv = len(val_ref[_decision(plan)])
    rec["agreement_head_constants_float16"] = float((got[_decision(plan)][:nv] ==
                                                     val_ref[_decision(plan)]).mean())
    rec["head_constants_float16_changes_decisions"] = not same
    if same:
        half.replace(out_path)
        rec["head_constants"] = "float16"
        rec["float16_constants"] = names
    else:
        half.unlink(missing_ok=True)


def validate_int8(plans: Sequence[SegmentSpec], backend: Backend, x: np.ndarray,
                  ref_all: Sequence[dict[str, np.ndarray]], tol: Int8Tolerance = Int8Tolerance(),
                  thresholds: dict[int, float] | None = None) -> dict[str, Any]:
    """Compare an int8 chain (own features forward) with torch fp32; raise when out of limits.

    `thresholds` (segment → threshold): the int8 files carry their own thresholds
    (`converters.int8_thresholds`); torch's exit flags are then taken at those, so the
    comparison measures the quantisation error, not the change of threshold, and a flip
    of a sample whose torch confidence lies within `golden_confidence_atol` of the int8
    threshold is excused (its count reported): those thresholds sit where int8 scores
    put them, and agreement with fp32 decisions is reported, not required."""
    feats = x
    near_any = np.zeros(len(x), bool)
    segs = []
    n = len(x)
    exit_at = {"int8": np.full(n, -1), "fp32": np.full(n, -1)}
    pred = {"int8": np.zeros(n, np.int64), "fp32": np.zeros(n, np.int64)}
    for i, plan in enumerate(plans):
        got = _run_all(backend, i, feats)
        ref = ref_all[i]
        near = np.zeros(len(x), bool)
        if thresholds is not None and i in thresholds:
            ref = {**ref, "exit": ref["confidence"] > np.float32(thresholds[i])}
            near = np.abs(ref["confidence"] - thresholds[i]) <= tol.golden_confidence_atol
            near_any |= near
        same = got["prediction"] == ref["prediction"]
        seg: dict[str, Any] = {"segment": i, "prediction_agreement": float(same.mean())}
        # an early exit's prediction matters only where it answers: checked on the samples
        # whose exit fires in both chains (all samples at the final segment)
        fired = (got["exit"].astype(bool) & ref["exit"].astype(bool)) if plan.is_exit \
            else np.ones(n, bool)
        seg["prediction_agreement_where_exiting"] = float(same[fired].mean()) if fired.any() else 1.0
        bad = []
        if seg["prediction_agreement_where_exiting"] < tol.min_prediction_agreement:
            bad.append(f"prediction agreement {seg['prediction_agreement_where_exiting']:.2%} on "
                       "the samples that exit here")
        for tag, out in (("int8", got), ("fp32", ref)):
            fire = out["exit"].astype(bool) if plan.is_exit else np.ones(n, bool)
            new = (exit_at[tag] < 0) & fire
            exit_at[tag][new] = i
            pred[tag][new] = out["prediction"][new]
        if plan.is_exit:
            agree = got["exit"] == ref["exit"]
            seg["exit_agreement"] = float((agree | near).mean())
            seg["exit_flips_near_own_threshold"] = int((~agree & near).sum())
            a, b = got["feature"].astype(np.float64), ref["feature"].astype(np.float64)
            seg["feature_rel_rms"] = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))
            if seg["exit_agreement"] < tol.min_exit_agreement:
                bad.append(f"exit agreement {seg['exit_agreement']:.2%}")
            if seg["feature_rel_rms"] > tol.max_feature_rel_rms:
                bad.append(f"feature relative RMS error {seg['feature_rel_rms']:.3f}")
            feats = got["feature"]
        if bad:
            raise ExportValidationError(
                f"int8 segment {i} ({backend.name}) is off torch fp32: {', '.join(bad)} (limits "
                f"{asdict(tol)}); calibrate on more/representative samples or keep heads float")
        segs.append(seg)
    both = (exit_at["int8"] == exit_at["fp32"]) & (pred["int8"] == pred["fp32"])
    e2e = float((both | near_any).mean())
    report = {"samples": n, "tolerance": asdict(tol), "segments": segs,
              "end_to_end_agreement": e2e, "end_to_end_agreement_unexcused": float(both.mean()),
              "exit_agreement": float((exit_at["int8"] == exit_at["fp32"]).mean()),
              "prediction_agreement": float((pred["int8"] == pred["fp32"]).mean())}
    if e2e < tol.min_end_to_end_agreement:
        raise ExportValidationError(
            f"int8 chain ({backend.name}) takes the same exit with the same prediction as torch "
            f"on {e2e:.2%} of samples (need {tol.min_end_to_end_agreement:.0%}); calibrate on "
            "more samples or keep heads float")
    return report


def _run_all(backend: Backend, i: int, x: np.ndarray, bs: int = 64) -> dict[str, np.ndarray]:
    parts = [backend.run(i, x[s : s + bs]) for s in range(0, len(x), bs)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


QUANT_METHODS: dict[str, dict[str, str]] = {
    "onnx": {"tool": "onnxruntime.quantization.quantize_static after quant_pre_process",
             "format": "QDQ", "weights": "int8 symmetric, per channel",
             "activations": "uint8 asymmetric, per tensor, MinMax calibration",
             "float_heads": "head nodes excluded from quantisation; their large constants "
                            "stored float16 + Cast (computed float32) where that changes no "
                            "decision (segments[].head_constants)"},
    "tflite": {"tool": "torchao PT2E (prepare_pt2e / convert_pt2e) + litert-torch",
               "quantizer": "litert_torch PT2EQuantizer (symmetric, static)",
               "weights": "int8 symmetric, per channel",
               "activations": "int8, per tensor, calibrated"},
}
