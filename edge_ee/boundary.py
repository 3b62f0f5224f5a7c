"""What one more exit costs on this machine, in FLOPs-equivalent per exit, per strategy.

An exit-split bundle pays, at every kept exit, more than a bare `session.run`: the exit
head, the layout reorders a runtime does around its optimised convolutions (onnxruntime's
NCHWc pass reorders in and out of every graph) and colder caches. Measured on ResNet-56
here: 150 / 112 / 53 µs for a cut in stage 1 / 2 / 3, against ~15 µs for a bare call.
An in-graph bundle (`converters/ingraph.py`, one graph with an ONNX `If` per exit) pays
the head, the `If` and the reorder out of and back into the blocked layout at the branch,
but no extra call: a different cost, so both are measured and the strategy the bundle
will run is charged (`BoundaryProtocol.strategy`).

`measure_boundaries` exports the whole network as one graph and, for each distinct
feature shape among the exits with a head, the network cut in two at the middle such
exit (its head included) — run as the split strategy runs them, through the runner's own
executor (`device_runners.overheads.split_call`), so the runner's per-segment work is
charged too — and those two files assembled into one in-graph file with the exit switched
off (threshold +inf: the worst case, the else-branch always runs). It then
times them **interleaved**: every round runs the whole graph, every two-graph chain and
every in-graph file in a shuffled order, each `block` times back to back (the first
re-warms that graph's weights in the caches, as on a device running one bundle; the median
of the rest counts: cold calls read an in-graph exit of fashion-resnet at +7.5 % against
+4.2 % warm), and keeps the ratio probe / whole of that round, so slow drifts in load hit
both sides of a ratio alike. The statistic is the
**median** of those paired ratios over at least `rounds` rounds and `min_duration_s`
seconds (a mean, even a 20 %-trimmed one, is not robust here: a preempted chain makes a
ratio of 10, a preempted whole graph one of 0.1, so the tails are lopsided; under a load
of 19 on 2 cores a trimmed mean read 46 % where the median read 14 %), and it is
**quantised up** to a grid (`grid`, a fraction of the whole network; never below the
median, so a worst-case bound on the summed charges, `FitConfig.max_overhead`, is not
undercut by rounding) so that repeated builds on the same machine charge identical costs
and choose identical exits. The fraction, less the head FLOPs that the cost table already
counts, is converted with the whole graph's FLOPs; every exit with that feature shape is
charged it. The result records that it is this host's own measurement (`source: host`),
both strategies' figures, which one is charged, and how it was made.

`strategy`: `split`, `ingraph`, or `auto` = `ingraph`, what an ONNX bundle (which carries
its in-graph file) runs by default under a bound: `edge-ee-run --strategy auto` runs the
strategy the build charged (`device_runners.strategies.bound_strategy`). `edge-ee build`
charges `split` for bundles without ONNX. Measured on fashion-resnet here, warm: an
in-graph exit +3.4 % of the network, a split boundary through the runner +9.1 % (two bare
calls +3.5 %; the rest is the runner's per-segment work).
"""

from __future__ import annotations

import math
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from device_runners.overheads import split_call
from device_runners.overheads import time_interleaved as _interleaved
from edge_ee.errors import ConfigError
from edge_ee.exitnet import ExitNet
from edge_ee.exits.heads import ExitHead
from edge_ee.overhead_bound import CHARGE_STRATEGIES


@dataclass(frozen=True)
class BoundaryProtocol:
    """How boundaries are timed (onnxruntime, batch 1)."""

    rounds: int = 200  # interleaved rounds at least (each runs every graph `block` times)
    warmup_rounds: int = 30
    min_duration_s: float = 2.0  # and at least this long
    grid: float = 0.01  # cost fractions are rounded up to multiples of this
    threads: int = 1
    seed: int = 0
    strategy: str = "auto"  # which strategy's cost is charged: split | ingraph | auto
    block: int = 5  # calls per graph back to back in a round: 1 re-warms, median of the rest

    def __post_init__(self) -> None:
        if self.rounds < 20 or self.warmup_rounds < 0:
            raise ConfigError(f"boundary timing needs ≥ 20 rounds, got {self.rounds}")
        if not 0.0 < self.grid < 1.0:
            raise ConfigError(f"grid must be a fraction in (0, 1), got {self.grid}")
        if self.block < 1:
            raise ConfigError(f"boundary timing needs a block of ≥ 1 call, got {self.block}")
        if self.strategy not in CHARGE_STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(CHARGE_STRATEGIES)}, got "
                              f"{self.strategy!r}")


MEASURED_STRATEGIES = ("split", "ingraph")
#: what `auto` charges (module docstring)
AUTO_CHARGE = "ingraph"


@dataclass(frozen=True)
class BoundaryCosts:
    """Per exit: the FLOPs-equivalent charged, and the measured fraction of the whole graph."""

    overhead_flops: tuple[float, ...]
    fraction: tuple[float, ...]  # quantised (chain − whole) / whole, 0 where no head
    raw_fraction: tuple[float, ...]  # before quantisation
    full_latency_ns: float  # median of the whole graph
    rounds: int
    protocol: BoundaryProtocol
    # per exit: the standard error of the median ratio (IQR / 1.349 · 1.2533 / √rounds)
    std_error: tuple[float, ...] = ()
    hysteresis: dict | None = None  # edge_ee.hysteresis: whether an earlier value was kept
    strategy: str = "split"  # whose cost is charged: split | ingraph (auto resolved)
    # per measured strategy: {"raw_fraction": [...], "std_error": [...]} per exit
    by_strategy: dict | None = None

    def to_json(self) -> dict:
        import onnxruntime as ort

        return {
            "source": "host", "host": platform.node(), "machine": platform.machine(),
            "runtime": f"onnxruntime {ort.__version__}", "threads": self.protocol.threads,
            "statistic": ("median of per-round paired ratios probe/whole (interleaved, "
                          f"shuffled order, blocks of {self.protocol.block} calls, first "
                          f"unmeasured), rounded up to {self.protocol.grid}"),
            "rounds": self.rounds, "full_latency_ns": self.full_latency_ns,
            "fraction": list(self.fraction), "raw_fraction": list(self.raw_fraction),
            "overhead_flops": list(self.overhead_flops), "protocol": asdict(self.protocol),
            "std_error": list(self.std_error), "hysteresis": self.hysteresis,
            "strategy": self.strategy, "by_strategy": self.by_strategy,
        }


def _session(path: Path, threads: int):
    from device_runners.backends import ort_session
    return ort_session(path, threads)


def quantise(fraction: float, grid: float) -> float:
    """Round a non-negative cost fraction to the grid (negative noise becomes 0)."""
    return round(max(0.0, fraction) / grid) * grid


def quantise_up(fraction: float, grid: float) -> float:
    """The smallest grid multiple ≥ the fraction (a charge never below its measurement;
    negative noise becomes 0)."""
    return math.ceil(max(0.0, fraction) / grid - 1e-9) * grid


def time_interleaved(calls: Sequence, protocol: BoundaryProtocol) -> np.ndarray:
    """(rounds, len(calls)) nanoseconds; each round runs every call once in a shuffled order
    (the device's own timer, `device_runners.overheads.time_interleaved`)."""
    return _interleaved(calls, protocol.rounds, protocol.warmup_rounds, protocol.min_duration_s,
                        protocol.seed, protocol.block)


def measure_boundaries(net: ExitNet, heads: Sequence[ExitHead | None], full_flops: int,
                       head_flops: Sequence[int] | None = None,
                       protocol: BoundaryProtocol = BoundaryProtocol()) -> BoundaryCosts:
    """Time each feature shape's boundary against the whole graph (see the module docstring)."""
    from converters.formats.onnx import export_onnx
    from converters.ingraph import write_ingraph
    from edge_ee.segments import EXIT_OUTPUTS, FINAL_OUTPUTS, ExitSegment, FinalSegment

    net.eval()
    head_flops = list(head_flops) if head_flops is not None else [0] * len(heads)
    x = torch.randn((1, *net.input_shape), generator=torch.Generator().manual_seed(0))
    shapes: list[tuple[int, ...]] = []
    with torch.no_grad():
        f = x
        for stage in net.stages:
            f = stage(f)
            shapes.append(tuple(f.shape[1:]))
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, h in enumerate(heads):
        if h is not None:
            groups.setdefault(shapes[i], []).append(i)
    xa = x.numpy()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        root = Path(tmp)
        whole = FinalSegment(list(net.stages), net.classifier).eval()
        full = _session(export_onnx(whole, x, root / "full.onnx", FINAL_OUTPUTS), protocol.threads)
        calls = [lambda: full.run(None, {"x": xa})]
        for members in groups.values():
            m = members[len(members) // 2]
            first = ExitSegment(list(net.stages[: m + 1]), heads[m]).eval()
            rest = FinalSegment(list(net.stages[m + 1 :]), net.classifier).eval()
            fa = export_onnx(first, x, root / f"a{m}.onnx", EXIT_OUTPUTS)
            fb = export_onnx(rest, first(x)[0], root / f"b{m}.onnx", FINAL_OUTPUTS)
            a, b = _session(fa, protocol.threads), _session(fb, protocol.threads)
            g = _session(write_ingraph([fa, fb], root / f"g{m}.onnx", thresholds=[math.inf]),
                         protocol.threads)
            calls.append(split_call(lambda f, a=a: dict(zip(EXIT_OUTPUTS, a.run(None, f),
                                                            strict=True)),
                                    lambda f, b=b: dict(zip(FINAL_OUTPUTS, b.run(None, f),
                                                            strict=True)), xa))
            calls.append(lambda g=g: g.run(None, {"x": xa}))
        times = time_interleaved(calls, protocol)
    ratios = times[:, 1:] / times[:, :1]
    q25, q75 = np.quantile(ratios, [0.25, 0.75], axis=0)
    n_rounds = len(ratios)
    by_strategy: dict = {}
    for k, strat in enumerate(MEASURED_STRATEGIES):  # columns: split, ingraph per shape
        raw_s = {s: float(np.median(ratios[:, 2 * g + k])) - 1.0 for g, s in enumerate(groups)}
        se_s = {s: float((q75[2 * g + k] - q25[2 * g + k]) / 1.349 * 1.2533 / np.sqrt(n_rounds))
                for g, s in enumerate(groups)}
        by_strategy[strat] = {
            "raw_fraction": [raw_s[shapes[i]] if h is not None else 0.0
                             for i, h in enumerate(heads)],
            "std_error": [se_s[shapes[i]] if h is not None else 0.0
                          for i, h in enumerate(heads)]}
    strategy = AUTO_CHARGE if protocol.strategy == "auto" else protocol.strategy
    raw, se = by_strategy[strategy]["raw_fraction"], by_strategy[strategy]["std_error"]
    frac, flops = [], []
    for i, h in enumerate(heads):
        q = 0.0 if h is None else quantise_up(raw[i], protocol.grid)
        frac.append(q)
        flops.append(0.0 if h is None else max(0.0, q * full_flops - head_flops[i]))
    return BoundaryCosts(tuple(flops), tuple(frac), tuple(raw), float(np.median(times[:, 0])),
                         n_rounds, protocol, tuple(se), strategy=strategy,
                         by_strategy=by_strategy)


def measure_boundary_flops(net: ExitNet, heads: Sequence[ExitHead | None], full_flops: int,
                           head_flops: Sequence[int] | None = None) -> tuple[float, ...]:
    """Per exit: FLOPs-equivalent of the boundary it adds (0 where there is no head)."""
    return measure_boundaries(net, heads, full_flops, head_flops).overhead_flops
