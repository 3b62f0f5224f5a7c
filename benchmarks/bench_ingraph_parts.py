"""Where an in-graph exit's cost goes, exit off (issue 15 item 3: measure before cutting).

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. .venv/bin/python benchmarks/bench_ingraph_parts.py \
        [--exit 1] [--rounds 200] [--block 5] [--out bench-out/ingraph-parts]

fashion-resnet (the demo's network), one `lda:2` exit at `--exit` fitted on 2000
class-balanced training images, cut in two there and exported; then, beside the whole
network as one graph, graphs that add one part of an in-graph exit at a time:
* `head, no If`: both parts in one flat graph with the exit head computed (its flag an
  extra output): the head's operators only;
* `If, no head`: the feature crosses into an `If` whose else-branch holds the rest (the
  condition a constant-false comparison on the feature): the `If` and the layout reorders
  out of and back into onnxruntime's blocked (NCHWc) layout, which cannot cross a subgraph;
* `in-graph, exit off`: what `converters.ingraph` assembles (threshold +inf);
* `in-graph, no Where`: the same without the three `Where` that keep an exited row's
  results in a batch whose rows disagree (correct for batch 1 only: a reference);
* `split`: the two parts as two sessions.
Timed with the boundary measurement's own protocol (`edge_ee.boundary.time_interleaved`:
shuffled rounds, each graph `--block` calls back to back, the first re-warming, the median
of the rest), 1 thread; printed as the median paired ratio to the whole graph − 1, with
the load average.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _graph(model, nodes, inits, outputs, path: Path) -> Path:
    import onnx
    g = onnx.helper.make_graph(nodes, path.stem, [model.graph.input[0]], outputs,
                               initializer=inits)
    m = onnx.helper.make_model(g, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    onnx.save(m, str(path))
    return path


def variants(fa: Path, fb: Path, root: Path) -> dict[str, Path]:
    """The graphs of the module docstring, from the two exported parts."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from converters.ingraph import _prefixed, write_ingraph
    sa, sb = onnx.load(str(fa)), onnx.load(str(fb))
    n0, i0, _ = _prefixed(sa, 0, "x")
    n1, i1, _ = _prefixed(sb, 1, "s0/feature")
    out = {"in-graph, exit off": write_ingraph([fa, fb], root / "off.onnx",
                                               thresholds=[math.inf])}
    out["head, no If"] = _graph(sa, n0 + n1, i0 + i1, [
        helper.make_tensor_value_info("s0/exit", TensorProto.BOOL, ["b"]),
        helper.make_tensor_value_info("s1/prediction", TensorProto.INT64, ["b"])],
        root / "flat.onnx")
    need, nodes0 = {"s0/feature"}, []
    for n in reversed(n0):  # only what computes the feature: no head
        if set(n.output) & need:
            nodes0.append(n)
            need |= set(n.input)
    pred = helper.make_tensor_value_info("s1/prediction", TensorProto.INT64, ["b"])
    else_g = helper.make_graph(n1, "rest", [], [pred], initializer=i1)
    then_g = helper.make_graph([helper.make_node("Constant", [], ["s1/prediction"],
                                                 value=numpy_helper.from_array(
                                                     np.zeros(1, np.int64)))], "none", [],
                               [pred])
    cond = [helper.make_node("ReduceMin", ["s0/feature"], ["m"], keepdims=0),
            helper.make_node("Less", ["m", "neg"], ["c"]),
            helper.make_node("If", ["c"], ["out"], then_branch=then_g, else_branch=else_g)]
    out["If, no head"] = _graph(sa, nodes0[::-1] + cond, [t for t in i0 if t.name in need] + [
        numpy_helper.from_array(np.array(-1e30, np.float32), "neg")],
        [helper.make_tensor_value_info("out", TensorProto.INT64, ["b"])], root / "ifonly.onnx")
    m = onnx.load(str(out["in-graph, exit off"]))
    eb = next(a for a in next(n for n in m.graph.node if n.op_type == "If").attribute
              if a.name == "else_branch").g
    kept = [helper.make_node("Identity", [n.input[2]], [n.output[0]]) if n.op_type == "Where"
            else n for n in eb.node]
    del eb.node[:]
    eb.node.extend(kept)
    onnx.save(m, str(root / "nowhere.onnx"))
    out["in-graph, no Where"] = root / "nowhere.onnx"
    return out


def main() -> None:
    import torch

    from converters.formats.onnx import export_onnx
    from device_runners.backends import ort_session
    from edge_ee.boundary import BoundaryProtocol, time_interleaved
    from edge_ee.data import balanced_indices, load_fashion_mnist
    from edge_ee.exitnet import from_sequential
    from edge_ee.exits import ExitSpec
    from edge_ee.models.fashion_resnet import CUTS, load_fashion_resnet
    from edge_ee.pipeline import FitConfig, fit_exits
    from edge_ee.segments import EXIT_OUTPUTS, FINAL_OUTPUTS, ExitSegment, FinalSegment
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exit", type=int, default=1, help="exit point (default 1)")
    p.add_argument("--rounds", type=int, default=200, help="timing rounds (default 200)")
    p.add_argument("--block", type=int, default=5, help="calls per graph per round (default 5)")
    p.add_argument("--out", type=Path, default=Path("bench-out/ingraph-parts"),
                   help="folder for the JSON (default bench-out/ingraph-parts)")
    a = p.parse_args()
    torch.set_num_threads(2)
    net = from_sequential(load_fashion_resnet(), list(CUTS), (1, 28, 28), "fashion-resnet")
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    fitted = fit_exits(net, train.subset(balanced_indices(train.labels, 2000, 0)),
                       FitConfig(exit_spec=ExitSpec.parse("lda:2"), exits=(a.exit,)),
                       progress=False, choose=False)
    x = test.normalised()[balanced_indices(test.labels, 10, 0)][:1]
    xt = torch.from_numpy(x)
    with tempfile.TemporaryDirectory() as td, torch.no_grad():
        root = Path(td)
        net.eval()
        full = export_onnx(FinalSegment(list(net.stages), net.classifier).eval(), xt,
                           root / "full.onnx", FINAL_OUTPUTS)
        first = ExitSegment(list(net.stages[: a.exit + 1]), fitted.heads[a.exit]).eval()
        fa = export_onnx(first, xt, root / "a.onnx", EXIT_OUTPUTS)
        fb = export_onnx(FinalSegment(list(net.stages[a.exit + 1 :]), net.classifier).eval(),
                         first(xt)[0], root / "b.onnx", FINAL_OUTPUTS)
        graphs = {"whole network": full, **variants(fa, fb, root)}
        sess = {k: ort_session(v, 1) for k, v in graphs.items()}
        sa, sb = ort_session(fa, 1), ort_session(fb, 1)
        calls = [lambda s=s: s.run(None, {"x": x}) for s in sess.values()]
        calls.append(lambda: sb.run(None, {"x": sa.run(None, {"x": x})[0]}))
        names = [*sess, "split"]
        load0 = os.getloadavg()
        t = time_interleaved(calls, BoundaryProtocol(rounds=a.rounds, block=a.block,
                                                     min_duration_s=2.0))
    ratio = {n: float(np.median(t[:, j] / t[:, 0]) - 1) for j, n in enumerate(names)}
    us = {n: float((np.median(t[:, j]) - np.median(t[:, 0])) / 1e3) for j, n in enumerate(names)}
    doc = {"exit": a.exit, "rounds": len(t), "block": a.block, "load_before": load0,
           "load_after": os.getloadavg(), "whole_us": float(np.median(t[:, 0]) / 1e3),
           "fraction_over_whole": ratio, "us_over_whole": us}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"ingraph_parts_exit{a.exit}.json").write_text(json.dumps(doc, indent=1))
    print(f"fashion-resnet exit {a.exit}: whole network {doc['whole_us']:.0f} µs; load "
          f"{load0[0]:.1f} -> {doc['load_after'][0]:.1f}\n| graph | over the whole network |"
          "\n|---|---|")
    for n in names[1:]:
        print(f"| {n} | {ratio[n]:+.4f} ({us[n]:+.1f} µs) |")


if __name__ == "__main__":
    main()
