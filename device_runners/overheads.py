"""`edge-ee-run BUNDLE --measure-overheads`: what each candidate exit costs on *this* device.

A candidates bundle (`edge-ee build --candidates`) carries, beside its segments, the
graphs of its manifest's `candidates` section: the whole network as one graph (`full`),
for each distinct feature shape among the exits the network cut in two at one probe exit
of that shape (`first`: the stages up to it and its head; `rest`: the remaining stages and
the classifier), and every exit's head alone. This module times them with the bundle's own
backend, **interleaved**: each round runs the whole graph, every two-graph chain (through
the runner's own executor, as the split strategy runs it: `split_call`), every in-graph
probe and every head in a shuffled order, so load drifts hit both sides of a
ratio alike; each call `block` times back to back, the first re-warming that graph's
weights in the caches (a device runs one bundle, warm) and the median of the rest recorded
(`block` 1: one cold call; cold calls overstate an exit's cost: on fashion-resnet here an
in-graph exit read +7.5 % cold against +4.2 % warm). Per round it keeps the paired ratio
chain / whole; the statistic is the median of those ratios (a mean is not robust: a pre-
empted call makes a ratio of 10 or 0.1), with the interquartile range as its spread, over
at least `rounds` rounds and `min_duration_s` seconds.

Per exit: `boundary_fraction` = median ratio of its shape's probe − 1 (the extra time of
one more boundary, its head included, as a fraction of the whole network), corrected by
the difference of this exit's head time from the probe's head time; on an ONNX backend,
when the bundle carries the probe's in-graph file (`candidates.groups[].ingraph`: the two
parts as one graph with the exit's `If`, exit off), `ingraph_fraction` likewise for the
in-graph strategy (schema 2; the build charges the strategy its runner will use);
`head_us`: the median time of its head alone; `probe_fraction_se`: the standard error of
that median (IQR / 1.349 · 1.2533 / √rounds) — under heavy load the spread widens, so
measure on a quiet device or with more rounds. The file names the runtime, backend,
threads, profile, machine and the bundle's manifest sha256, and the candidates' identity
(model, input shape, FLOPs, exits with their specs and feature shapes), which `edge-ee
build --overheads FILE` checks against the model it builds.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from device_runners.backends import Backend
from device_runners.errors import BundleError
from device_runners.manifest import Bundle
from device_runners.schema import OVERHEADS_KIND, OVERHEADS_SCHEMA_VERSION

STATISTIC = ("median over interleaved rounds (shuffled order) of the paired ratio "
             "chain/whole; spread: interquartile range")


@dataclass(frozen=True)
class OverheadProtocol:
    """How candidate boundaries are timed (batch 1)."""

    rounds: int = 200  # interleaved rounds at least (each runs every graph `block` times)
    warmup_rounds: int = 30
    min_duration_s: float = 3.0  # and at least this long
    seed: int = 0
    block: int = 5  # calls per graph back to back in a round: 1 re-warms, median of the rest

    def __post_init__(self) -> None:
        if self.block < 1:
            raise BundleError(f"overhead timing needs a block of ≥ 1 call, got {self.block}")
        if self.rounds < 20 or self.warmup_rounds < 0 or self.min_duration_s < 0:
            raise BundleError(f"overhead timing needs ≥ 20 rounds and ≥ 0 warm-up rounds and "
                              f"seconds, got {self}; pass --overhead-rounds 20 or more")


def time_interleaved(calls: Sequence[Callable[[], Any]], rounds: int, warmup_rounds: int,
                     min_duration_s: float, seed: int = 0, block: int = 1) -> np.ndarray:
    """(rounds, len(calls)) nanoseconds; each round runs every call in a shuffled order.

    `block` > 1: each call runs `block` times back to back — the first unmeasured, to bring
    its own weights back into the caches the other calls evicted, as on a device that runs
    one bundle — and the round records the median of the other `block − 1`; `block` = 1:
    one (cold) call. Warm-up rounds are dropped; timing goes on until `rounds` rounds and
    `min_duration_s` seconds (both) have been measured."""
    rng = np.random.default_rng(seed)
    rows: list[list[float]] = []
    order = np.arange(len(calls))
    t_end = time.monotonic() + min_duration_s
    r = 0
    while True:
        rng.shuffle(order)
        row = [0.0] * len(calls)
        for j in order:
            if block > 1:
                calls[j]()
            v = []
            for _ in range(max(1, block - 1)):
                t0 = time.perf_counter_ns()
                calls[j]()
                v.append(time.perf_counter_ns() - t0)
            row[j] = float(np.median(v))
        r += 1
        if r == warmup_rounds:
            t_end = time.monotonic() + min_duration_s
        if r > warmup_rounds:
            rows.append(row)
            if len(rows) >= rounds and time.monotonic() >= t_end:
                return np.asarray(rows, np.float64)


class ProbeChain:
    """A probe's two parts as a two-segment sample-exit chain for the runner's own executor
    (`device_runners.executor.execute`, the split strategy), so a split boundary is timed
    with the runner's per-segment work (active set, feeds, bookkeeping), not as two bare
    calls: on fashion-resnet here that work is about a third of a split boundary's cost.
    It serves as both the bundle and the backend of `execute`."""

    manifest: ClassVar[dict[str, Any]] = {"model": {"granularity": "sample"}}
    segments: ClassVar[list[dict[str, Any]]] = [{"index": 0, "inputs": ["x"]},
                                                {"index": 1, "inputs": ["x"]}]

    def __init__(self, first: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
                 rest: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> None:
        self.first, self.rest = first, rest

    def run(self, index: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return (self.first if index == 0 else self.rest)(feeds)


def split_call(first: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
               rest: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
               x: np.ndarray) -> Callable[[], Any]:
    """One sample through both parts as the split strategy runs it, exit off (the rest
    always runs): `first` and `rest` take feeds by name and return outputs by name."""
    from device_runners.executor import execute
    chain = ProbeChain(first, rest)
    return lambda: execute(chain, chain, x, no_exit=True)  # type: ignore[arg-type]


def candidates_section(bundle: Bundle) -> dict[str, Any]:
    """The manifest's `candidates` section, or a BundleError saying how to get one."""
    cand = bundle.manifest.get("candidates")
    if not isinstance(cand, dict) or not cand.get("groups"):
        raise BundleError(f"{bundle.root} carries no candidate exits to measure; build it with "
                          "`edge-ee build ... --candidates` (all candidate exits), copy that "
                          "bundle to the device and measure it")
    return cand


def _quartiles(v: np.ndarray) -> tuple[float, float, float]:
    q25, q50, q75 = np.quantile(v, [0.25, 0.5, 0.75])
    return float(q25), float(q50), float(q75)


def _ingraph_probe(bundle: Bundle, backend: Backend, group: dict[str, Any]) -> Any | None:
    """An onnxruntime session on the group's in-graph probe file (one graph, the exit's `If`,
    exit off), with the backend's threads; None when the bundle has none or the backend does
    not run ONNX files (TFLite has no in-graph strategy)."""
    name = group.get("ingraph")
    if not name or backend.file_format != "onnx":
        return None
    from device_runners.backends import ort_session
    return ort_session(bundle.root / name, backend.threads)


def measure_overheads(bundle: Bundle, backend: Backend,
                      protocol: OverheadProtocol = OverheadProtocol()) -> dict[str, Any]:
    """Time the bundle's candidate graphs (see the module docstring); the file's exits,
    rounds and full latency (the caller adds the device identity)."""
    cand = candidates_section(bundle)
    x = np.ascontiguousarray(bundle.golden()["input"][:1], dtype=np.float32)
    full = cand["full"]
    calls: list[Callable[[], Any]] = [lambda: backend.run(full, x)]
    feature: dict[int, np.ndarray] = {}
    for g in cand["groups"]:
        first, rest = g["first"], g["rest"]
        feature[g["probe"]] = backend.run(first, x)["feature"]
        calls.append(split_call(lambda f, a=first: backend.run(a, f["x"]),
                                lambda f, b=rest: backend.run(b, f["x"]), x))
    ingraph_of: dict[int, int] = {}  # group → column of its in-graph probe (ONNX only)
    for k, g in enumerate(cand["groups"]):
        sess = _ingraph_probe(bundle, backend, g)
        if sess is not None:
            ingraph_of[k] = len(calls)
            feed = {sess.get_inputs()[0].name: x}
            calls.append(lambda s=sess, f=feed: s.run(None, f))
    head_of: dict[int, int] = {}
    for g in cand["groups"]:
        for i in g["exits"]:
            f = feature[g["probe"]]
            head_of[i] = len(calls)
            calls.append(lambda h=cand["heads"][str(i)], f=f: backend.run(h, f))
    t = time_interleaved(calls, protocol.rounds, protocol.warmup_rounds,
                         protocol.min_duration_s, protocol.seed, protocol.block)
    full_ns = float(np.median(t[:, 0]))
    exits = []
    for k, g in enumerate(cand["groups"], start=1):
        q25, q50, q75 = _quartiles(t[:, k] / t[:, 0] - 1.0)
        se = (q75 - q25) / 1.349 * 1.2533 / np.sqrt(len(t))  # of the median, from the IQR
        probe_head = float(np.median(t[:, head_of[g["probe"]]]))
        for i in g["exits"]:
            h25, h50, h75 = _quartiles(t[:, head_of[i]] / 1e3)
            frac = q50 + (h50 * 1e3 - probe_head) / full_ns
            entry = {"exit_index": int(i), "probe": int(g["probe"]),
                     "boundary_fraction": frac, "probe_fraction": q50,
                     "probe_fraction_iqr": [q25, q75], "probe_fraction_se": se,
                     "head_us": h50,
                     "head_us_iqr": [h25, h75], "boundary_us": frac * full_ns / 1e3}
            if k - 1 in ingraph_of:
                g25, g50, g75 = _quartiles(t[:, ingraph_of[k - 1]] / t[:, 0] - 1.0)
                gfrac = g50 + (h50 * 1e3 - probe_head) / full_ns
                entry.update(ingraph_fraction=gfrac, ingraph_probe_fraction=g50,
                             ingraph_probe_fraction_iqr=[g25, g75],
                             ingraph_probe_fraction_se=(g75 - g25) / 1.349 * 1.2533
                             / np.sqrt(len(t)), ingraph_us=gfrac * full_ns / 1e3)
            exits.append(entry)
    exits.sort(key=lambda e: e["exit_index"])
    f25, _, f75 = _quartiles(t[:, 0] / 1e3)
    return {"rounds": len(t), "full_latency_us": full_ns / 1e3, "full_latency_us_iqr": [f25, f75],
            "exits": exits, "protocol": asdict(protocol), "statistic": STATISTIC}


def overheads_document(bundle: Bundle, backend: Backend, backend_name: str, measured: dict,
                       profile: dict[str, Any]) -> dict[str, Any]:
    """The overheads file: identity of the runtime, device and bundle, then the figures."""
    cand = candidates_section(bundle)
    fmt = type(backend).file_format
    return {
        "kind": OVERHEADS_KIND, "schema_version": OVERHEADS_SCHEMA_VERSION,
        "bundle": {"manifest_sha256": bundle.manifest_sha256,
                   "name": bundle.manifest["model"]["name"],
                   "graph_format": fmt.removesuffix("-int8") + (
                       " (candidate graphs have no int8 files)" if fmt.endswith("-int8") else "")},
        "identity": cand["identity"],
        "device": {"runtime": backend.version(), "backend": backend_name,
                   "threads": backend.threads, "profile": profile.get("name"),
                   "profile_how": profile.get("how"), "host": platform.node(),
                   "machine": platform.machine(), "processor": platform.processor() or None,
                   "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **measured,
    }
