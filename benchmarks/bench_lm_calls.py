"""Cost structure of LM decoding graphs: per-call µs of every segment graph of the given
bundles at one decoding step (P = 1 new row, `--past` cached rows), ONNX nodes before and
after onnxruntime's graph optimisation, FLOPs per step, and the same call through
IOBinding with preallocated output OrtValues beside the plain `session.run` the runner
uses: inputs bound once (an upper bound) and rebound every call (what a runner whose KV
cache grows each token would do). Graphs and modes are interleaved in shuffled
order per round; medians over rounds of the per-round median call. For a bundle with
two or more segments, also the sum of its segments called *in turn* (one call of each
per step, as decoding calls them): alone, a graph keeps its weights in the cache between
calls, which on a memory-bound model makes the sum of the alone figures far too low.

  PYTHONPATH=. python benchmarks/bench_lm_calls.py /work/main/edge-ee-out/lm-full \\
      /work/main/edge-ee-out/lm-verify bench-lm-out/stories-full ... --out calls.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from device_runners.backends.onnxruntime import ort_session


def feeds_for(sess: ort.InferenceSession, lm: dict, past: int, rng: np.random.Generator
              ) -> dict[str, np.ndarray]:
    kvh, hd, dim = int(lm["kv_heads"]), int(lm["head_dim"]), int(lm["dim"])
    out: dict[str, np.ndarray] = {}
    for i in sess.get_inputs():
        n = i.name
        if n == "tokens":
            out[n] = np.asarray([[3]], np.int64)
        elif n == "pos":
            out[n] = np.asarray([past], np.int64)
        elif n == "copied":
            out[n] = np.asarray([0], np.int64)
        elif n == "h":
            out[n] = rng.standard_normal((1, 1, dim)).astype(np.float32)
        else:  # past_k*/past_v*
            out[n] = rng.standard_normal((past, kvh, hd)).astype(np.float32)
    return out


def node_counts(path: Path) -> tuple[int, int, dict[str, int]]:
    raw = onnx.load(str(path))
    with tempfile.TemporaryDirectory() as d:
        opt = Path(d) / "opt.onnx"
        ort_session(path, 1, optimized_model_filepath=str(opt))
        o = onnx.load(str(opt))
    ops = collections.Counter(n.op_type for n in o.graph.node)
    return len(raw.graph.node), len(o.graph.node), dict(ops.most_common())


class Timed:
    """One graph's two ways to call it."""

    def __init__(self, path: Path, lm: dict, past: int) -> None:
        self.sess = ort_session(path, 1)
        self.feeds = feeds_for(self.sess, lm, past, np.random.default_rng(0))
        self.io = self.sess.io_binding()
        for n, v in self.feeds.items():
            self.io.bind_ortvalue_input(n, ort.OrtValue.ortvalue_from_numpy(v))
        ref = self.sess.run(None, self.feeds)
        self.outs = [o.name for o in self.sess.get_outputs()]
        for n, v in zip(self.outs, ref, strict=True):
            self.io.bind_ortvalue_output(n, ort.OrtValue.ortvalue_from_numpy(np.empty_like(v)))

    def plain(self) -> None:
        self.sess.run(None, self.feeds)

    def bound(self) -> None:
        """Inputs bound once (an upper bound on what binding can save)."""
        self.sess.run_with_iobinding(self.io)

    def rebind(self) -> None:
        """What a runner would do per token: bind this step's arrays, outputs preallocated."""
        for n, v in self.feeds.items():
            self.io.bind_cpu_input(n, v)
        self.sess.run_with_iobinding(self.io)


class InTurn:
    """A bundle's segment graphs, one plain call of each after another."""

    def __init__(self, graphs: list[Timed]) -> None:
        self.graphs = graphs

    def turn(self) -> None:
        for g in self.graphs:
            g.plain()


def time_calls(fn, n: int) -> float:
    ts = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn()
        ts[i] = time.perf_counter_ns() - t0
    return float(np.median(ts)) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path, help="LM bundle folders")
    ap.add_argument("--past", type=int, default=64, help="cached rows (default 64)")
    ap.add_argument("--calls", type=int, default=200, help="calls per timing (default 200)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    ap.add_argument("--out", type=Path, default=None, help="JSON to write (default: none)")
    a = ap.parse_args()
    graphs: dict[str, Timed] = {}
    info: dict[str, dict] = {}
    for b in a.bundles:
        man = json.loads((b / "manifest.json").read_text())
        lm = man["language_model"]
        for s in man["segments"]:
            key = f"{b.name}/{s['name']}"
            path = b / s["files"]["onnx"]
            graphs[key] = Timed(path, lm, a.past)
            raw, opt, ops = node_counts(path)
            info[key] = {"blocks": s["blocks"], "flops_per_step": s["flops"],
                         "nodes_exported": raw, "nodes_optimised": opt, "ops_optimised": ops}
    modes = ("plain", "bound", "rebind")
    jobs = [(k, m) for k in graphs for m in modes]
    for b in a.bundles:  # a bundle's segments in turn: one pseudo-graph per bundle
        segs = [g for k, g in graphs.items() if k.startswith(f"{b.name}/")]
        if len(segs) > 1:
            jobs.append((f"{b.name}/in turn", "turn"))
            graphs[f"{b.name}/in turn"] = InTurn(segs)
    res: dict[tuple[str, str], list[float]] = {j: [] for j in jobs}
    loads = []
    for _ in range(a.rounds):
        loads.append(os.getloadavg()[0])
        random.shuffle(jobs)
        for k, m in jobs:
            res[(k, m)].append(time_calls(getattr(graphs[k], m), a.calls))
    out = {"past": a.past, "calls": a.calls, "rounds": a.rounds, "load_1min": loads,
           "onnxruntime": ort.__version__, "graphs": {}}
    for k in graphs:
        if isinstance(graphs[k], InTurn):
            turn = float(np.median(res[(k, "turn")]))
            out["graphs"][k] = {"call_us_segments_in_turn": turn}
            print(f"{k:<40} all segments called in turn: {turn:7.1f} µs a step", flush=True)
            continue
        plain, bound, rebind = (float(np.median(res[(k, m)])) for m in modes)
        out["graphs"][k] = {**info[k], "call_us_plain": plain, "call_us_iobinding_bound_once": bound,
                            "call_us_iobinding_rebound": rebind}
        print(f"{k:<40} blocks {info[k]['blocks']} nodes {info[k]['nodes_exported']:>4}→"
              f"{info[k]['nodes_optimised']:>4}  MFLOP {info[k]['flops_per_step'] / 1e6:7.2f}  "
              f"run {plain:7.1f} µs  iobinding: bound once {bound:7.1f}, rebound {rebind:7.1f} µs",
              flush=True)
    print("load average (1 min) per round:", [round(v, 2) for v in loads])
    if a.out:
        a.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
