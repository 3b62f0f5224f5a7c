"""Export one segment module to TFLite with litert-torch (no TensorFlow), fp32 or PT2E int8.

litert-torch lowers the module through torch.export straight to a `.tflite` flatbuffer
and keeps the NCHW layout of the segment's input and outputs, so the segment chain and
the baked-in exit constants are exactly those of the ONNX export. Two limits of
litert-torch 0.10 shape the files:

* dynamic batch fails in its lowering (broadcast of a symbolic batch), and a batch-1
  file cannot be resized (reshapes are baked), so every TFLite segment has batch 1 and
  the TFLite backend runs a larger batch sample by sample;
* int64 outputs become int32 (`enable_x64=False`, what TFLite runtimes support); the
  backend widens them back to int64;
* a dynamic length that is not the batch (segmentation's running-token index `idx`)
  fails to lower as well (`broadcast_in_dim` of a symbolic size), so a spec with a
  `Padding` gets one signature per fixed length in one file (the weights are shared):
  the runtime pads the feed to the next length and trims the outputs. A multi-input
  spec keeps the manifest's input order as the signature's (args_0, args_1, …).

int8 uses PT2E (torchao `prepare_pt2e` / `convert_pt2e`) with litert-torch's symmetric
per-channel quantizer, calibrated on real samples; `float_heads=True` keeps every node
under the segment's `head` (exit head or final classifier head) in float.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from converters.errors import ExportValidationError
from converters.quiet import quiet
from converters.spec import SegmentSpec

os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HEAD_SCOPE = "head"
EXT = "tflite"


def _import_litert_torch():  # -> module
    try:
        import litert_torch
    except ImportError as err:
        raise ExportValidationError(
            "TFLite export needs litert-torch: pip install -c constraints.txt '.[tflite]' "
            "(or drop 'tflite' from --formats)") from err
    return litert_torch


def _quiet():  # -> context manager
    return quiet(("litert_torch", "torch._export", "torch.export"), stderr=True)


def export_tflite(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Write `module` (fp32) as a batch-1 TFLite file at `path`."""
    litert_torch = _import_litert_torch()
    module.eval()
    try:
        with _quiet(), torch.no_grad():
            litert_torch.convert(module, (example[:1],)).export(str(path))
    except Exception as err:  # the converter raises many kinds; report them as one
        raise _export_error(module, err) from err
    return path


def _export_error(module: nn.Module, err: Exception) -> ExportValidationError:
    return ExportValidationError(
        f"TFLite export of {type(module).__name__} failed: {type(err).__name__}: {err}; "
        "check that the segment uses only ops litert-torch lowers, or export --formats onnx")


def export_spec(spec: SegmentSpec, path: Path) -> Path:
    """Write one segment spec as a batch-1 TFLite file (one signature per padded length
    when the spec has a `Padding`)."""
    args = spec.example_args()
    if len(args) == 1 and spec.padding is None:
        return export_tflite(spec.module, args[0], path)
    litert_torch = _import_litert_torch()
    variants = [(key, a) for key, _, a in _variants(spec)]
    spec.module.eval()
    try:
        with _quiet(), torch.no_grad():
            conv = None
            for key, a in variants:
                conv = (litert_torch.signature(key, spec.module, a) if conv is None
                        else conv.signature(key, spec.module, a))
            conv.convert().export(str(path))
    except Exception as err:  # the converter raises many kinds; report them as one
        raise _export_error(spec.module, err) from err
    return path


def _variants(spec: SegmentSpec) -> list[tuple[str, int | None, tuple[torch.Tensor, ...]]]:
    """(signature key, padded length or None, example args) of every signature."""
    args = spec.example_args()
    pad = spec.padding
    if pad is None:
        return [("serving_default", None, args)]
    if pad.input not in spec.input_names:
        raise ExportValidationError(f"padding names input {pad.input!r}; the segment takes "
                                    f"{list(spec.input_names)}")
    k = spec.input_names.index(pad.input)
    out = []
    for size in sorted(pad.sizes):
        shape = list(args[k].shape)
        shape[pad.axis] = int(size)
        padded = torch.full(shape, pad.value, dtype=args[k].dtype)
        out.append((f"{pad.input}{size}", int(size), (*args[:k], padded, *args[k + 1:])))
    return out


def export_spec_int8(spec: SegmentSpec, calib: Mapping[int | None, Sequence[Mapping[str, np.ndarray]]],
                     path: Path, float_heads: bool = True) -> Path:
    """PT2E static int8 of a multi-input or padded spec: one signature per padded length,
    each calibrated on `calib[length]` (`calib[None]` without padding): real feeds by
    input name whose padded input already has that length (the task makes them valid)."""
    litert_torch = _import_litert_torch()
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    spec.module.eval()
    quantizer = _quantizer(float_heads)
    try:
        with _quiet(), torch.no_grad():
            conv = None
            for key, size, args in _variants(spec):
                feeds = calib.get(size) or []
                if not feeds:
                    raise ExportValidationError(f"no calibration feeds for signature {key}")
                gm = torch.export.export(spec.module, args).module()
                gm = prepare_pt2e(gm, quantizer)
                move_exported_model_to_eval(gm)
                for f in feeds:
                    gm(*(torch.from_numpy(np.ascontiguousarray(f[n])) for n in spec.input_names))
                gm = convert_pt2e(gm, fold_quantize=False)
                move_exported_model_to_eval(gm)
                gm.training = False
                conv = (litert_torch.signature(key, gm, args) if conv is None
                        else conv.signature(key, gm, args))
            conv.convert(quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    except Exception as err:
        raise ExportValidationError(
            f"TFLite int8 (PT2E) export of {type(spec.module).__name__} failed: "
            f"{type(err).__name__}: {err}; export without --int8 or with --formats onnx") from err
    return path


def tool_versions() -> dict[str, object]:
    """The versions a manifest records for TFLite files."""
    from importlib import metadata
    out: dict[str, object] = {}
    for dist in ("litert-torch", "ai-edge-litert", "torchao"):
        try:
            out[dist.replace("-", "_") + "_version"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _in_head(node: torch.fx.Node) -> bool:
    stack = node.meta.get("nn_module_stack") or {}
    return any(p == HEAD_SCOPE or str(p).startswith(HEAD_SCOPE + ".") for p, _ in stack.values())


def _quantizer(float_heads: bool):  # -> PT2EQuantizer
    from litert_torch.quantize import pt2e_quantizer as pq

    cfg = pq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)

    class BackboneQuantizer(pq.PT2EQuantizer):
        """Annotates every supported pattern except those under the segment's head."""

        def _annotate_for_static_quantization_config(self, model):
            keep = (lambda n: not _in_head(n)) if float_heads else None
            self._annotate_all_static_patterns(model, self.global_config, keep)
            return model

    return BackboneQuantizer().set_global(cfg)


def export_tflite_int8(module: nn.Module, calib_x: np.ndarray, path: Path,
                       float_heads: bool = True, max_calib: int = 256) -> Path:
    """PT2E static int8 (per-channel weights, per-tensor activations) → TFLite at `path`."""
    litert_torch = _import_litert_torch()
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    module.eval()
    x = torch.from_numpy(np.ascontiguousarray(calib_x[:max_calib], dtype=np.float32))
    quantizer = _quantizer(float_heads)
    try:
        with _quiet(), torch.no_grad():
            gm = torch.export.export(module, (x[:1],)).module()
            gm = prepare_pt2e(gm, quantizer)
            move_exported_model_to_eval(gm)
            for n in range(len(x)):  # batch 1, as the graph was traced
                gm(x[n : n + 1])
            gm = convert_pt2e(gm, fold_quantize=False)
            move_exported_model_to_eval(gm)
            gm.training = False
            litert_torch.convert(gm, (x[:1],), quant_config=QuantConfig(pt2e_quantizer=quantizer)
                                 ).export(str(path))
    except Exception as err:
        raise ExportValidationError(
            f"TFLite int8 (PT2E) export of {type(module).__name__} failed: "
            f"{type(err).__name__}: {err}; export without --int8 or with --formats onnx") from err
    _check_output_shapes(module, x[:1], path)
    return path


def _check_output_shapes(module: nn.Module, x1: torch.Tensor, path: Path) -> None:
    """The file's outputs must have torch's shapes. litert-torch 0.10 writes some int8
    outputs in its internal NHWC layout (measured: the fashion-resnet stem's conv-BN-ReLU
    feature as (1, 28, 28, 24) for torch's (1, 24, 28, 28)); the next segment would get
    the wrong layout, so such a file is refused here with a typed error."""
    from converters.quantize import tflite_runner
    with torch.no_grad():
        want = module(x1)
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    names = [f"output_{k}" for k in range(len(want))]
    got = tflite_runner(path, names)(x1.numpy())
    for name, w in zip(names, want, strict=True):
        if tuple(got[name].shape) != tuple(w.shape):
            raise ExportValidationError(
                f"TFLite int8 (PT2E) file of {type(module).__name__}: {name} has shape "
                f"{tuple(got[name].shape)}, torch gives {tuple(w.shape)} (litert-torch kept its "
                "internal NHWC layout at this output); export int8 with --formats onnx, or "
                "TFLite fp32 only")


def patch_tflite_threshold(path: Path, value: float) -> float:
    """Set the threshold an exit segment's `.tflite` file compares its confidence with (the
    constant float32 scalar input of the one `GREATER` op whose result is a graph output:
    the exit flag); returns the old one. The 4 bytes are rewritten in place in the
    flatbuffer (read with the LiteRT schema), the file replaced atomically."""
    from ai_edge_litert import schema_py_generated as schema

    from converters.errors import QuantizationError
    from device_runners.files import atomic_write_bytes

    buf = bytearray(Path(path).read_bytes())
    model = schema.Model.GetRootAsModel(buf, 0)
    codes = [max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(model.OperatorCodesLength())]
    found = []
    for si in range(model.SubgraphsLength()):
        g = model.Subgraphs(si)
        outputs = {g.Outputs(k) for k in range(g.OutputsLength())}
        for oi in range(g.OperatorsLength()):
            op = g.Operators(oi)
            if (codes[op.OpcodeIndex()] != schema.BuiltinOperator.GREATER or op.InputsLength() != 2
                    or op.Outputs(0) not in outputs):
                continue
            t = g.Tensors(op.Inputs(1))
            data = model.Buffers(t.Buffer()).DataAsNumpy()
            if t.Type() == schema.TensorType.FLOAT32 and isinstance(data, np.ndarray) \
                    and data.size == 4:
                found.append(data)
    if len(found) != 1:
        raise QuantizationError(f"{Path(path).name}: found {len(found)} 'confidence > threshold' "
                                "comparisons with a float32 constant, need exactly 1; keep fp32 "
                                "thresholds for this bundle (--int8-thresholds fp32)")
    view = found[0].view(np.float32)  # a view into `buf`: writing it patches the flatbuffer
    old = float(view[0])
    view[0] = np.float32(value)
    atomic_write_bytes(path, bytes(buf))
    return old
