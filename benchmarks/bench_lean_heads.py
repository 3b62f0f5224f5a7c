"""Exit heads in onnxruntime, before/after folding (issue 15 item 2): graph nodes and µs per head.

    .venv/bin/python benchmarks/bench_lean_heads.py [--model fashion-resnet|fashion-cnn]

Fits real E2CM (raw and 2×2-pooled) and LDA (2×2-pooled) heads at every exit of the
shipped Fashion-MNIST network (statistics on a class-balanced 6000-image sample of the
training split), then, per head, exports two head-only graphs (feature → prediction,
confidence, exit flag): the **reference** form (adaptive AveragePool, then
`decide(scorer.raw(f))`: the form bundles exported before) and the **lean** form
(`ExitHead.forward`, what bundles export now: folded Gemm, ReduceMean for large pools). Each is
timed on onnxruntime (1 thread, batch 1) interleaved with a no-op graph of the same input
(`Identity`), over `--rounds` rounds; the head's cost is median(head) − median(no-op).
Decisions of both exported forms are compared on the features of the whole test split.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import onnx
    import torch
    import torch.nn.functional as F
    from torch import nn

    from converters.formats.onnx import export_onnx
    from edge_ee.boundary import BoundaryProtocol, _session, time_interleaved
    from edge_ee.data import balanced_indices, load_fashion_mnist
    from edge_ee.exitnet import from_sequential
    from edge_ee.exits import ExitSpec
    from edge_ee.exits.fit import batches
    from edge_ee.pipeline import fit_variants

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fashion-resnet", choices=("fashion-resnet", "fashion-cnn"))
    p.add_argument("--rounds", type=int, default=2000)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lean_heads.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.model == "fashion-resnet":
        from edge_ee.models.fashion_resnet import CUTS, load_fashion_resnet
        net = from_sequential(load_fashion_resnet(), list(CUTS), (1, 28, 28), a.model)
    else:
        from edge_ee.models.small_cnn import load_small_cnn
        net = from_sequential(load_small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28), a.model)
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    train = train.subset(balanced_indices(train.labels, 6000))
    specs = ["e2cm", "e2cm:2", "lda:2"]
    variants = [[ExitSpec.parse(s)] * net.num_exits for s in specs]
    head_sets, _, _ = fit_variants(net, train, variants, progress=False)
    feats: list[list[torch.Tensor]] = [[] for _ in range(net.num_exits)]
    with torch.no_grad():
        for x, _ in batches(test, 500):
            for i, stage in enumerate(net.stages):
                x = stage(x)
                feats[i].append(x)
    feats_t = [torch.cat(f) for f in feats]

    class Reference(nn.Module):
        def __init__(self, head: nn.Module) -> None:
            super().__init__()
            self.head = head

        def forward(self, x: torch.Tensor):
            # before: AveragePool (adaptive) for every pooled head, unfolded scorer, decide
            pool = self.head.transform.pool
            f = (x if pool is None else F.adaptive_avg_pool2d(x, pool)).flatten(1)
            return self.head.decide(self.head.scorer.raw(f))

    class Lean(Reference):
        def forward(self, x: torch.Tensor):
            return self.head(x)

    class Noop(nn.Module):
        def forward(self, x: torch.Tensor):
            return x + 0.0

    outs = ("prediction", "confidence", "exit")
    rows = []
    proto = BoundaryProtocol(rounds=a.rounds, warmup_rounds=50, min_duration_s=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for spec, heads in zip(specs, head_sets, strict=True):
            for i, head in enumerate(heads):
                f = feats_t[i]
                # a threshold inside the confidence range, so flags are not all equal
                conf = head.decide(head.raw_scores(f[:2000]))[1]
                head.set_threshold(float(conf.median()))
                paths = {}
                for name, mod in (("reference", Reference(head)), ("lean", Lean(head)),
                                  ("noop", Noop())):
                    paths[name] = export_onnx(mod.eval(), f[:1], root / f"{spec}-{i}-{name}.onnx",
                                              ("y",) if name == "noop" else outs)
                sess = {k: _session(v, 1) for k, v in paths.items()}
                x1 = f[:1].numpy()
                calls = [lambda s=s, x1=x1: s.run(None, {"x": x1}) for s in sess.values()]
                t = np.median(time_interleaved(calls, proto), axis=0)
                xs = f.numpy()
                ref, lean = (sess[k].run(None, {"x": xs}) for k in ("reference", "lean"))
                rows.append({
                    "exit": i, "spec": spec, "feature_shape": list(f.shape[1:]),
                    "nodes_reference": len(onnx.load(str(paths["reference"])).graph.node),
                    "nodes_lean": len(onnx.load(str(paths["lean"])).graph.node),
                    "us_reference": (t[0] - t[2]) / 1e3, "us_lean": (t[1] - t[2]) / 1e3,
                    "us_noop_call": t[2] / 1e3,
                    "prediction_agreement": float((ref[0] == lean[0]).mean()),
                    "exit_agreement": float((ref[2] == lean[2]).mean()),
                    "max_confidence_diff": float(np.abs(ref[1] - lean[1]).max()),
                })
                r = rows[-1]
                print(f"exit {i} {spec:7s} {tuple(f.shape[1:])!s:14s} nodes "
                      f"{r['nodes_reference']:2d} → {r['nodes_lean']:2d}   µs "
                      f"{r['us_reference']:6.1f} → {r['us_lean']:6.1f}   agreement pred "
                      f"{r['prediction_agreement']:.4f} exit {r['exit_agreement']:.4f}", flush=True)
    import os
    load = os.getloadavg()
    doc = {"model": a.model, "rounds": a.rounds, "load_average_1_5_15": load, "rows": rows,
           "test_samples": len(test)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = a.out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(doc, indent=1))
    tmp_out.replace(a.out)
    print(f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (2 cores, shared); "
          f"wrote {a.out}")


if __name__ == "__main__":
    main()
