"""What one decoding call of an LM segment costs on onnxruntime, for the `verify`
threshold search and the choice of the exit (`edge_ee.lm.build`).

A segment call costs a fixed part (the runtime call, the runner's feeds, the head) plus
its blocks, plus a little per extra row riding along. `measure_call_costs` exports three
real segment graphs of the model — blocks [0, 1) + an exit head, blocks [1, L) + the
final head, and [0, L) + the final head (monolithic) — to a temporary folder, times them
on onnxruntime CPU (1 thread, one new row over `past` cached rows, interleaved rounds,
medians; the rest segment also with 4 rows) and solves for the figures below. The two
segments are timed call by call in turn, as decoding calls them: each alone keeps its
weights in the cache between calls and measured up to 1.6× faster than in turn on a
memory-bound model (the large char GPT: 168 + 343 µs alone, 790 µs in turn, 690 µs
the monolithic graph), which made the replay promise savings decoding did not see.

    block_us   = (t[0, L) − t[0, 1)) / (L − 1)
    exit_us    = t[0, 1) − block_us + runner   (fixed part of a call ending in an exit head)
    final_us   = t[1, L) − (L − 1)·block_us + runner   (… ending in the LM head)
    row_us     = (t[1, L) at 4 rows − at 1 row) / 3 / (L − 1)   (per extra row and block)

`block_costs` is the model without a device: a block costs 1, a call `overhead` blocks.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from edge_ee.lm.model import DecoderLM

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallCosts:
    """Linear cost of a segment call, in µs (`source: measured`) or blocks (`blocks`)."""

    block_us: float
    exit_us: float
    final_us: float
    row_us: float = 0.0
    source: str = "blocks"

    def draft(self, k: int, calls: int = 1) -> float:
        """Blocks [0, k) over `calls` segment calls, each ending in an exit head."""
        return calls * self.exit_us + k * self.block_us

    def rest(self, k: int, n_layers: int, exit_calls: int = 0) -> float:
        """Blocks [k, n_layers) and the LM head (`exit_calls` more exit segments between)."""
        return exit_calls * self.exit_us + self.final_us + (n_layers - k) * self.block_us

    def rows(self, k: int, n_layers: int) -> float:
        """Each extra row riding along with a call of blocks [k, n_layers)."""
        return self.row_us * (n_layers - k)

    def to_dict(self) -> dict:
        return asdict(self)


def block_costs(overhead_blocks: float) -> CallCosts:
    """The device-free model: a block costs 1, a call `overhead_blocks`."""
    return CallCosts(1.0, overhead_blocks, overhead_blocks, 0.0, "blocks")


def _feeds(names: list[str], model: DecoderLM, past: int, rows: int) -> dict[str, np.ndarray]:
    c = model.config
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    for n in names:
        if n == "tokens":
            out[n] = np.full((1, rows), 3, np.int64)
        elif n == "pos":
            out[n] = np.asarray([past], np.int64)
        elif n == "copied":
            out[n] = np.asarray([0], np.int64)
        elif n == "h":
            out[n] = rng.standard_normal((1, rows, c.dim)).astype(np.float32)
        else:
            out[n] = rng.standard_normal((past, c.n_kv_heads, c.head_dim)).astype(np.float32)
    return out


def _median_us(calls_in_turn: list[tuple], calls: int) -> list[float]:
    """Median µs of each (session, feeds), the sessions called one after another."""
    ts = np.empty((calls, len(calls_in_turn)))
    for i in range(calls):
        for j, (sess, feeds) in enumerate(calls_in_turn):
            t0 = time.perf_counter_ns()
            sess.run(None, feeds)
            ts[i, j] = time.perf_counter_ns() - t0
    return [float(v) / 1e3 for v in np.median(ts, axis=0)]


RUNNER_CALL_US = 20.0  # the runner's own work a call (feeds, KV writes, executor loop):
# 15–25 µs measured around `decode` on this machine (docs/bench-lm/decoding.md §1)


@torch.no_grad()
def measure_call_costs(model: DecoderLM, past: int = 64, calls: int = 100,
                       rounds: int = 5, workdir: Path | None = None,
                       runner_call_us: float = RUNNER_CALL_US) -> CallCosts:
    """Export and time the three graphs (module docstring); µs on this machine, plus
    `runner_call_us` for the runner's own work on every call. The graphs (`first.onnx`,
    `rest.onnx`, `mono.onnx`) stay in `workdir` when one is given."""
    from converters.formats.onnx import export_spec
    from device_runners.backends.onnxruntime import ort_session
    from edge_ee.lm.bundle import segment_spec
    from edge_ee.lm.segments import build_segments

    c = model.config
    past = max(1, min(past, c.seq_len - 4))
    w, b = model.output.weight.detach(), torch.zeros(c.vocab_size)
    first, rest = build_segments(model, (1,), [(w, b)], [2.0])  # threshold 2: never exits
    (mono,) = build_segments(model, (), [], [])
    graphs = {"first": first, "rest": rest, "mono": mono}
    t0 = time.monotonic()
    sessions = {}
    with tempfile.TemporaryDirectory(prefix="edge-ee-costs-") as tmp_dir:
        tmp = Path(workdir) if workdir is not None else Path(tmp_dir)
        for name, seg in graphs.items():
            path = export_spec(segment_spec(seg, None if seg.is_last else 2.0),
                               tmp / f"{name}.onnx")
            sessions[name] = (ort_session(path, 1), seg.input_names())
        # first + rest in turn (a token that does not exit), first + rest with 4 rows in
        # turn (a verify call), monolithic alone
        jobs = [(("first", 1), ("rest", 1)), (("first", 1), ("rest", 4)), (("mono", 1),)]
        feeds = {j: _feeds(sessions[j[0]][1], model, past, j[1]) for job in jobs for j in job}
        for j, f in feeds.items():  # warm up
            sessions[j[0]][0].run(None, f)
        times: dict[tuple[str, int], list[float]] = {j: [] for j in feeds}
        rng = np.random.default_rng(0)
        for _ in range(rounds):
            for i in rng.permutation(len(jobs)):
                job = jobs[int(i)]
                us = _median_us([(sessions[j[0]][0], feeds[j]) for j in job], calls)
                for j, v in zip(job, us, strict=True):
                    times[j].append(v)  # first: from both of its pairs
    t = {j: float(np.median(v)) for j, v in times.items()}
    n_layers = c.n_layers
    # over L − 1 blocks (the heads differ by far less than a block): less noise than one
    # difference of two timings
    block = max((t[("mono", 1)] - t[("first", 1)]) / max(n_layers - 1, 1), 1e-3 * t[("mono", 1)])
    costs = CallCosts(
        block_us=block, exit_us=max(t[("first", 1)] - block, 0.0) + runner_call_us,
        final_us=max(t[("rest", 1)] - (n_layers - 1) * block, 0.0) + runner_call_us,
        row_us=max(t[("rest", 4)] - t[("rest", 1)], 0.0) / 3 / max(n_layers - 1, 1),
        source="measured")
    log.info("call costs on onnxruntime (µs, %.0f s, load %.1f): %s", time.monotonic() - t0,
             os.getloadavg()[0], costs)
    return costs
