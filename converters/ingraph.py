"""In-graph exits: a chain's exported segment graphs assembled into ONE ONNX graph with `If`.

The split strategy runs one graph per segment and the runner decides between calls. The
in-graph strategy makes one runtime call per input: segment 0 runs, its exit flags are
reduced to one condition (every row of the batch exits), and an ONNX `If` node returns the
exit's prediction (then-branch) or runs the rest of the network (else-branch, nested the
same way for each further exit). Outputs: `prediction` (int64), `confidence` (float32)
and `exit` (int64, the index of the segment each row stopped at: the split's record). A
row whose exit fired keeps its exit's results when other rows of its batch go on
(`Where` on the way out), so batches decide exactly as the split does.

The graph is assembled from the already exported and validated segment files (no second
export): every name of segment i gets the prefix `s{i}/`, segment i + 1 reads segment
i's `feature` from the enclosing scope. Where the weights of a branch live is a choice
(`weights`): `branch` puts each segment's initializers inside the subgraph that uses them
(onnxruntime then optimises them as constants of that subgraph: layout transforms and
pre-packing), `outer` keeps them all in the main graph, captured from the outer scope
(what `torch.cond` through the dynamo exporter produces). See docs/ingraph.md for why
`branch` is the default (measured).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converters.errors import ExportValidationError

log = logging.getLogger(__name__)

OUTPUTS = ("prediction", "confidence", "exit")
WEIGHT_PLACEMENTS = ("branch", "outer")
EXIT_OUT = ("feature", "prediction", "confidence", "exit")
FINAL_OUT = ("prediction", "confidence")


def _prefixed(model: onnx.ModelProto, i: int, source: str) -> tuple[list, list, list]:
    """Segment i's nodes, initializers and value infos with every name prefixed `s{i}/`;
    its one input renamed to `source` (the previous segment's feature, or the graph input)."""
    g = model.graph
    if len(g.input) != 1:
        raise ExportValidationError(f"segment {i} takes {len(g.input)} inputs; in-graph exits "
                                    "need single-input segments (sample-exit chains)")
    if model.functions:
        raise ExportValidationError(f"segment {i} holds ONNX functions; re-export it inlined")
    inp = g.input[0].name

    def rn(name: str) -> str:
        if not name:
            return name
        return source if name == inp else f"s{i}/{name}"

    nodes = []
    for n in g.node:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            raise ExportValidationError(f"segment {i} already has control flow ({n.op_type})")
        m.name = f"s{i}/{n.name or n.op_type}"
        m.input[:] = [rn(v) for v in n.input]
        m.output[:] = [rn(v) for v in n.output]
        nodes.append(m)
    inits = []
    for t in g.initializer:
        c = onnx.TensorProto()
        c.CopyFrom(t)
        c.name = rn(t.name)
        inits.append(c)
    infos = []
    for v in [*g.value_info, *g.output]:
        c = onnx.ValueInfoProto()
        c.CopyFrom(v)
        c.name = rn(v.name)
        infos.append(c)
    return nodes, inits, infos


def _out_info(name: str, kind: str) -> onnx.ValueInfoProto:
    elem = TensorProto.FLOAT if kind == "confidence" else TensorProto.INT64
    return helper.make_tensor_value_info(name, elem, ["batch"])


def _set_threshold(inits: list, nodes: list, exit_name: str, i: int, value: float) -> None:
    """Replace the threshold constant of segment i's exit comparison (output `exit_name`)."""
    node = next((n for n in nodes if n.output and n.output[0] == exit_name), None)
    if node is None or node.op_type not in ("Greater", "GreaterOrEqual"):
        raise ExportValidationError(f"segment {i}: its exit flag is not a comparison with a "
                                    "threshold; cannot override the threshold")
    name = node.input[1]
    for t in inits:
        if t.name == name:
            arr = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array(np.full_like(arr, value), name))
            return
    raise ExportValidationError(f"segment {i}: threshold {name!r} is not an initializer")


def set_threshold(model: onnx.ModelProto, value: float) -> onnx.ModelProto:
    """A copy of an exit segment's model whose exit threshold constant is `value` (+inf:
    never exits, -inf: always exits); for overhead measurements."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _set_threshold(list(out.graph.initializer), list(out.graph.node), "exit", 0, value)
    return out


def assemble(models: Sequence[onnx.ModelProto], weights: str = "branch",
             thresholds: Sequence[float | None] | None = None) -> onnx.ModelProto:
    """One ONNX model with nested `If` exits from a chain's segment models (exits first,
    the final segment last). `thresholds`: per exit segment a value that replaces its
    threshold constant (None keeps it; +inf switches the exit off, for overhead runs)."""
    if weights not in WEIGHT_PLACEMENTS:
        raise ExportValidationError(f"weights must be one of {WEIGHT_PLACEMENTS}, got {weights!r}")
    if len(models) < 2:
        raise ExportValidationError("in-graph exits need at least one exit segment before the final one")
    last = len(models) - 1
    for i, m in enumerate(models):
        outs = tuple(o.name for o in m.graph.output)
        need = EXIT_OUT if i < last else FINAL_OUT
        if not set(need) <= set(outs):
            raise ExportValidationError(f"segment {i} outputs {outs}, need {need}")
    inp = models[0].graph.input[0]
    outer_inits: list[onnx.TensorProto] = []

    def level(k: int, source: str) -> tuple[list, list, list, tuple[str, str, str]]:
        """Nodes, initializers and value infos that compute segment k onwards from
        `source`; the names of its three results."""
        nodes, inits, infos = _prefixed(models[k], k, source)
        if thresholds is not None and k < last and thresholds[k] is not None:
            _set_threshold(inits, nodes, f"s{k}/exit", k, float(thresholds[k]))  # type: ignore[arg-type]
        if weights == "outer":
            outer_inits.extend(inits)
            inits = []
        p = f"s{k}/"
        idx = f"{p}exit_index"
        if k == last:
            nodes += [helper.make_node("Constant", [], [f"{p}k"], value=numpy_helper.from_array(
                          np.array(k, np.int64)), name=f"{p}k"),
                      helper.make_node("Shape", [f"{p}prediction"], [f"{p}shape"], name=f"{p}shape"),
                      helper.make_node("Expand", [f"{p}k", f"{p}shape"], [idx], name=f"{p}expand")]
            return nodes, inits, infos, (f"{p}prediction", f"{p}confidence", idx)
        # then: every row exits here
        then_nodes = [
            helper.make_node("Identity", [f"{p}prediction"], [f"{p}then/prediction"]),
            helper.make_node("Identity", [f"{p}confidence"], [f"{p}then/confidence"]),
            helper.make_node("Constant", [], [f"{p}then/k"],
                             value=numpy_helper.from_array(np.array(k, np.int64))),
            helper.make_node("Shape", [f"{p}prediction"], [f"{p}then/shape"]),
            helper.make_node("Expand", [f"{p}then/k", f"{p}then/shape"], [f"{p}then/exit"])]
        then_g = helper.make_graph(then_nodes, f"exit{k}_taken", [],
                                   [_out_info(f"{p}then/{n}", n) for n in OUTPUTS])
        # else: the rest of the network; rows that exited here keep this exit's results
        sub_nodes, sub_inits, sub_infos, (rp, rc, re) = level(k + 1, f"{p}feature")
        kk = f"{p}else/k"
        sub_nodes += [
            helper.make_node("Where", [f"{p}exit", f"{p}prediction", rp], [f"{p}else/prediction"]),
            helper.make_node("Where", [f"{p}exit", f"{p}confidence", rc], [f"{p}else/confidence"]),
            helper.make_node("Constant", [], [kk], value=numpy_helper.from_array(np.array(k, np.int64))),
            helper.make_node("Where", [f"{p}exit", kk, re], [f"{p}else/exit"])]
        else_g = helper.make_graph(sub_nodes, f"exit{k}_not_taken", [],
                                   [_out_info(f"{p}else/{n}", n) for n in OUTPUTS],
                                   initializer=sub_inits, value_info=sub_infos)
        res = tuple(f"{p}result/{n}" for n in OUTPUTS)
        nodes += [helper.make_node("ReduceMin", [f"{p}exit"], [f"{p}all"], keepdims=0,
                                   name=f"{p}all"),
                  helper.make_node("If", [f"{p}all"], list(res), then_branch=then_g,
                                   else_branch=else_g, name=f"{p}if")]
        return nodes, inits, infos, res  # type: ignore[return-value]

    nodes, inits, infos, res = level(0, inp.name)
    nodes += [helper.make_node("Identity", [r], [n], name=f"out/{n}")
              for r, n in zip(res, OUTPUTS, strict=True)]
    graph = helper.make_graph(nodes, "ingraph_exits", [inp], [_out_info(n, n) for n in OUTPUTS],
                              initializer=inits + outer_inits, value_info=infos)
    model = helper.make_model(graph, opset_imports=list(models[0].opset_import),
                              producer_name="edge-ee ingraph")
    model.ir_version = models[0].ir_version
    onnx.checker.check_model(model, full_check=True)
    return model


def write_ingraph(segment_files: Sequence[str | Path], path: str | Path, weights: str = "branch",
                  thresholds: Sequence[float | None] | None = None) -> Path:
    """Assemble the segment files into one in-graph-exit file at `path`."""
    models = [onnx.load(str(f)) for f in segment_files]
    try:
        model = assemble(models, weights, thresholds)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportValidationError(f"the in-graph exit model does not check: {err}") from err
    onnx.save(model, str(path))
    log.debug("in-graph exits: %d segments -> %s (%s weights)", len(models), path, weights)
    return Path(path)


def exits_off(n_segments: int) -> list[float | None]:
    """Thresholds that switch every exit off (+inf): the in-graph overhead run."""
    return [math.inf] * (n_segments - 1)


def write_candidate_probes(folder: Path, task_section: dict[str, Any] | None) -> list[str]:
    """For each candidate group that plans an `ingraph` file (`edge_ee.candidates`), assemble
    its exported `first` and `rest` ONNX files into that file with the exit off (+inf): the
    in-graph strategy's worst case at one exit, for `edge-ee-run --measure-overheads`.
    Returns the files written."""
    groups = ((task_section or {}).get("candidates") or {}).get("groups") or []
    written = []
    for g in groups:
        if g.get("ingraph"):
            write_ingraph([folder / f"{g['first']}.onnx", folder / f"{g['rest']}.onnx"],
                          folder / g["ingraph"], thresholds=[math.inf])
            written.append(g["ingraph"])
    return written


# ------------------------------------------------------------------ the bundle writer's hook

#: why a TFLite bundle carries no in-graph exits (see docs/ingraph.md for the error text)
TFLITE_ABSENT = ("litert-torch 0.10 cannot lower torch.cond: converting a module whose "
                 "forward calls torch.cond fails with 'RuntimeError: Lowering not found: "
                 "cond' (litert_torch/backend/export.py), and a .tflite file has no If to "
                 "assemble the exported segments into; TFLite bundles run split")


def ingraph_section(folder: Path, specs: Sequence[Any], segments: list[dict[str, Any]],
                    validation_x: np.ndarray, confidence_atol: float,
                    formats: Sequence[str], weights: str = "branch",
                    batch_size: int = 64, int8_confidence_atol: float = 0.05
                    ) -> dict[str, Any] | None:
    """Write `ingraph.onnx` from the chain's ONNX segment files in `folder`, validate it
    against torch (end to end: exit index, prediction, confidence) and against the split
    chain on onnxruntime, and return the manifest's `strategies` section. None for a chain
    without exits (one segment). Raises ExportValidationError when the graph disagrees.

    With int8 ONNX segments (`onnx-int8`, thresholds already the int8 files' own) it also
    writes `ingraph.int8.onnx` from them, assembled the same way, and validates it against
    the int8 split on onnxruntime (`int8_confidence_atol`: the int8 golden band); it counts
    (listed under `files`) only when it agrees, else `absent` says why."""
    from converters.validate import torch_outputs
    from device_runners.backends import ort_session
    from device_runners.strategies import agreement, reference

    if len(segments) < 2:
        return None
    section: dict[str, Any] = {"split": {"graphs": "segments"}}
    if "onnx" not in formats:
        section[INGRAPH] = {"absent": {f: _absent_why(f) for f in segments[0]["files"]}}
        return section
    name = "ingraph.onnx"
    write_ingraph([folder / s["files"]["onnx"] for s in segments], folder / name, weights)
    thresholds = [s["exit"].get("threshold") for s in segments]
    got = _run_graph(folder / name, validation_x, batch_size)
    ref = reference(torch_outputs(specs, validation_x), thresholds, confidence_atol)
    vs_torch = agreement(got, ref, confidence_atol)
    if not vs_torch["passed"]:
        raise ExportValidationError(f"the in-graph exit graph disagrees with torch: {vs_torch}; "
                                    "export without it or report the model")
    split = [ort_session(folder / s["files"]["onnx"]) for s in segments]
    vs_split = agreement(got, reference(_split_outputs(split, segments, validation_x),
                                        thresholds, confidence_atol), confidence_atol)
    entry: dict[str, Any] = {
        "files": {"onnx": name}, "inputs": ["x"], "outputs": list(OUTPUTS), "weights": weights,
        "control_flow": "onnx If, one per exit, nested in the else-branch",
        "validation": {"torch": vs_torch, "split": vs_split, "confidence_atol": confidence_atol},
    }
    absent = {f: _absent_why(f) for f in segments[0]["files"] if f not in ("onnx", INT8)}
    if INT8 in segments[0]["files"]:
        rec = _int8_ingraph(folder, segments, validation_x, weights, batch_size,
                            int8_confidence_atol)
        entry["validation_by_format"] = {INT8: rec}
        if rec["split"]["passed"]:
            entry["files"][INT8] = INT8_FILE
        else:
            (folder / INT8_FILE).unlink(missing_ok=True)
            absent[INT8] = (f"assembled but disagrees with the int8 split on onnxruntime "
                            f"({rec['split']}); int8 runs split")
            log.warning("int8 in-graph exits left out: %s", absent[INT8])
    if absent:
        entry["absent"] = absent
    section[INGRAPH] = entry
    return section


INT8 = "onnx-int8"
INT8_FILE = "ingraph.int8.onnx"


def _int8_ingraph(folder: Path, segments: list[dict[str, Any]], x: np.ndarray, weights: str,
                  batch_size: int, atol: float) -> dict[str, Any]:
    """Assemble `ingraph.int8.onnx` from the int8 segment files and compare it with the int8
    split on onnxruntime: exit, prediction (units within `atol` of a threshold they met may
    differ) and confidence where the exits agree."""
    from device_runners.backends import ort_session
    from device_runners.strategies import agreement, reference, segment_thresholds

    write_ingraph([folder / s["files"][INT8] for s in segments], folder / INT8_FILE, weights)
    got = _run_graph(folder / INT8_FILE, x, batch_size)
    split = [ort_session(folder / s["files"][INT8]) for s in segments]
    thr = segment_thresholds(segments, INT8)
    shapes = {k: list(v.shape) for k, v in got.items()}
    if any(v != [len(x)] for v in shapes.values()):  # one value per input row, or it fails
        vs_split = {"passed": False, "output_shapes": shapes, "samples": len(x)}
    else:
        vs_split = agreement(got, reference(_split_outputs(split, segments, x), thr, atol), atol)
    seg_ops = [int8_kernels(folder / s["files"][INT8]) for s in segments]
    fused = {"split": {k: sum(c.get(k, 0) for c in seg_ops) for c in seg_ops for k in c},
             "ingraph": int8_kernels(folder / INT8_FILE)}
    return {"split": vs_split, "confidence_atol": atol, "thresholds": "the int8 files' own",
            "int8_kernels_after_optimisation": fused,
            "reference": "the int8 split on onnxruntime (int8 is validated against torch "
                         "by the int8 chain's own validation)"}


def int8_kernels(path: Path) -> dict[str, int]:
    """How many operators of each kind onnxruntime's optimised graph holds (all subgraphs,
    `If` branches included) that compute in int8 (`QLinear*`, `*Integer`) or convert
    (`QuantizeLinear`, `DequantizeLinear`): whether the QDQ pairs were fused into int8
    kernels. Read from the session's `optimized_model_filepath` (level ALL, CPU)."""
    import tempfile

    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        model = onnx.load(so.optimized_model_filepath)
    counts: dict[str, int] = {}

    def walk(g: onnx.GraphProto) -> None:
        for n in g.node:
            if n.op_type.startswith("QLinear") or n.op_type.endswith("Integer") or \
                    n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                counts[n.op_type] = counts.get(n.op_type, 0) + 1
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
    walk(model.graph)
    return dict(sorted(counts.items()))


def _run_graph(path: Path, x: np.ndarray, bs: int) -> dict[str, np.ndarray]:
    from device_runners.backends import ort_session
    sess = ort_session(path)
    return _run(lambda b: dict(zip(OUTPUTS, sess.run(None, {"x": b}), strict=True)), x, bs)


INGRAPH = "ingraph"


def _absent_why(fmt: str) -> str:
    if fmt in ("tflite", "tflite-int8"):
        return TFLITE_ABSENT
    return f"no in-graph exits for {fmt} files"


def _run(fn: Any, x: np.ndarray, bs: int) -> dict[str, np.ndarray]:
    parts = [fn(x[s : s + bs]) for s in range(0, len(x), bs)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _split_outputs(sessions: list[Any], segments: list[dict[str, Any]],
                   x: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Every segment's outputs on onnxruntime, chaining features (no early stop)."""
    outs = []
    for sess, _seg in zip(sessions, segments, strict=True):
        names = [o.name for o in sess.get_outputs()]
        o = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x}), strict=True))
        outs.append(o)
        x = o.get("feature", x)
    return outs
