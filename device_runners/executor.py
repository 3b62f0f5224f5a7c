"""The one loop over a bundle's segments, with an active set of units still running.

Every task runs through `execute`: segment after segment, each `Backend.run` timed with
`perf_counter_ns`, until every unit has stopped or the final segment has run. What a
*unit* is comes from the bundle's granularity (`model.granularity` in the manifest),
and only the `ActiveSet` strategy differs:

* `sample` (`SampleRows`): a unit is one input row (classification, clustering). The
  segment gets the rows still running; rows whose `exit` flag is set leave the batch and
  the rest pass their `feature` on. A batch of one is the single-sample mode.
* `token` (`TokenIndex`): a unit is a token of an input — a 4x4 pixel patch for
  segmentation (CBT). Segment 0 takes the images; later segments take the whole feature
  grids plus the flat (image-major) index of the tokens still running (`idx`) and its
  inverse (`pos`, `token_positions`), gather, compute and add the updates back inside
  the graph, so stopped tokens keep their last feature. Tokens whose `exit_mask` is set
  keep the logits of that exit; the extra `assemble` graph turns the token logits into
  the class maps. Per-input outcome
  arrays: `exit` (B, tokens), `prediction` (B, H, W), `confidence` (B, tokens),
  `extra["token_logits"]` (B, tokens, K).

`no_exit` ignores exit decisions (every unit runs to the end: the split overhead).
* `position` (`device_runners.decode.SequencePositions`): a unit is a sequence position of
  a language model, decoded one after another; the active set carries the KV cache
  between `execute` calls (one per decoding step) and drives them itself.

Adding a granularity is one `ActiveSet` subclass registered in `ACTIVE_SETS`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from device_runners.backends import Backend
from device_runners.errors import BundleError
from device_runners.manifest import Bundle

ACTIVE_SETS: dict[str, type[ActiveSet]] = {}


def register_active_set(cls: type[ActiveSet]) -> type[ActiveSet]:
    ACTIVE_SETS[cls.granularity] = cls
    return cls


@dataclass
class Outcome:
    """What one `execute` call did. Per unit: the segment it stopped at, its prediction
    and confidence (and, for tokens, its logits); per segment run: latency and how many
    units entered it."""

    exit: np.ndarray
    prediction: np.ndarray
    confidence: np.ndarray
    segment_latency_ns: list[int]
    active: list[int]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def latency_ns(self) -> int:
        return int(sum(self.segment_latency_ns) + self.extra.get("assemble_latency_ns", 0))


class ActiveSet:
    """The units of one `execute` call that are still running, and what they feed."""

    granularity: ClassVar[str] = ""
    sequential: ClassVar[bool] = False  # units arrive one after another (`drive`)
    first: int = 0  # the segment a call starts at

    def __init__(self, bundle: Bundle, x: np.ndarray) -> None:
        self.bundle, self.x = bundle, x

    @classmethod
    def drive(cls, bundle: Bundle, backend: Backend, x: np.ndarray, no_exit: bool,
              clock: Any) -> Outcome:
        """One input of a sequential granularity: `execute` per step with one active set."""
        raise NotImplementedError

    @property
    def count(self) -> int:
        raise NotImplementedError

    def feeds(self, seg: dict[str, Any]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def update(self, index: int, out: dict[str, np.ndarray], stop: str) -> None:
        """Record the units that stop at segment `index` and keep the rest running.
        `stop`: "exits" (the graph's exit decisions), "none" (no unit stops) or "all"."""
        raise NotImplementedError

    @staticmethod
    def _stopping(flags: np.ndarray, stop: str) -> np.ndarray:
        if stop == "exits":
            return flags.astype(bool)
        return np.full(len(flags), stop == "all")

    def finish(self, backend: Backend, clock: Any) -> Outcome:
        raise NotImplementedError


@register_active_set
class SampleRows(ActiveSet):
    """Rows of a batch; exited rows leave it (`run_batch`), a batch of one is `run_single`."""

    granularity = "sample"

    def __init__(self, bundle: Bundle, x: np.ndarray) -> None:
        super().__init__(bundle, x)
        n = len(x)
        self.rows = np.arange(n)
        self.feature = x
        self.exit = np.full(n, -1, np.int64)
        self.prediction = np.zeros(n, np.int64)
        self.confidence = np.zeros(n, np.float32)

    @property
    def count(self) -> int:
        return len(self.rows)

    def feeds(self, seg: dict[str, Any]) -> dict[str, np.ndarray]:
        return {seg["inputs"][0]: self.feature}

    def update(self, index: int, out: dict[str, np.ndarray], stop: str) -> None:
        done = self._stopping(out.get("exit", out["prediction"]), stop)
        stopped = self.rows[done]
        self.exit[stopped] = index
        self.prediction[stopped] = out["prediction"][done]
        self.confidence[stopped] = out["confidence"][done]
        if stop != "all":
            self.rows, self.feature = self.rows[~done], out["feature"][~done]

    def finish(self, backend: Backend, clock: Any) -> Outcome:
        return Outcome(self.exit, self.prediction, self.confidence, [], [])


@register_active_set
class TokenIndex(ActiveSet):
    """Tokens of a batch of inputs, numbered flat image-major (token t of input b is row
    b*h*w + t): a flat index of the running ones; stopped ones keep their logits. A batch
    of one is single mode; a batch gives the same per-input results in fewer calls."""

    granularity = "token"

    def __init__(self, bundle: Bundle, x: np.ndarray) -> None:
        super().__init__(bundle, x)
        task = bundle.manifest.get("segmentation") or {}
        self.b = len(x)
        self.h, self.w = task["token_hw"]
        self.k = len(bundle.manifest["classes"])
        n = self.b * self.h * self.w
        self.idx = np.arange(n, dtype=np.int64)
        self.logits = np.zeros((n, self.k), np.float32)
        self.exit = np.full(n, -1, np.int64)
        self.feature: np.ndarray | None = None
        self.prediction: np.ndarray | None = None

    @property
    def count(self) -> int:
        return len(self.idx)

    def feeds(self, seg: dict[str, Any]) -> dict[str, np.ndarray]:
        if self.feature is None:  # the first segment takes the images
            return {seg["inputs"][0]: self.x}
        names = seg["inputs"]
        return {names[0]: self.feature, names[1]: self.idx,
                names[2]: token_positions(self.idx, self.b, self.h * self.w)}

    def update(self, index: int, out: dict[str, np.ndarray], stop: str) -> None:
        if "exit_mask" not in out:  # a monolithic graph: the class maps directly
            self.prediction = out["prediction"]
            self.exit[:] = int(self.bundle.manifest["segmentation"]["num_exits"]) - 1
            self.idx = self.idx[:0]
            return
        mask = self._stopping(out["exit_mask"], stop)
        stopped = self.idx[mask]
        self.logits[stopped] = out["logits"][mask]
        self.exit[stopped] = index
        self.idx, self.feature = self.idx[~mask], out["feature"]

    def finish(self, backend: Backend, clock: Any) -> Outcome:
        assemble_ns = 0
        logits = None
        per_input = self.logits.reshape(self.b, self.h * self.w, self.k)
        if self.prediction is None:
            logits = per_input
            grid = np.ascontiguousarray(
                per_input.transpose(0, 2, 1).reshape(self.b, self.k, self.h, self.w))
            t0 = clock()
            self.prediction = backend.run("assemble", {"logits": grid})["prediction"]
            assemble_ns = clock() - t0
        e = per_input - per_input.max(2, keepdims=True)
        conf = (1.0 / np.exp(e).sum(2)).astype(np.float32)  # max softmax of each token
        return Outcome(self.exit.reshape(self.b, -1), self.prediction, conf, [], [],
                       extra={"token_logits": logits, "assemble_latency_ns": assemble_ns})


def token_positions(idx: np.ndarray, batch: int, tokens: int) -> np.ndarray:
    """(batch, tokens) int64: 1 + the position of each token in the flat running index
    `idx`, 0 for a token that is not running (the token graphs' `pos` input)."""
    pos = np.zeros(batch * tokens, np.int64)
    pos[idx] = np.arange(1, len(idx) + 1)
    return pos.reshape(batch, tokens)


def granularity(bundle: Bundle) -> str:
    g = (bundle.manifest.get("model") or {}).get("granularity", "sample")
    if g not in ACTIVE_SETS:
        raise BundleError(f"this runner cannot execute {g!r} exits (it knows {sorted(ACTIVE_SETS)}); "
                          "upgrade edge-ee on the device")
    return g


def execute(bundle: Bundle, backend: Backend, x: np.ndarray, no_exit: bool = False,
            clock: Any = time.perf_counter_ns, units: ActiveSet | None = None) -> Outcome:
    """Run the units of `x` through the segments until each has stopped.

    `units`: an active set that carries state from one call to the next (sequence
    positions: the KV cache); it starts at its segment `first`. Without it, a granularity
    whose units arrive one after another (`sequential`) drives `execute` once per step
    itself (`ActiveSet.drive`), and any other gets a fresh active set for `x`."""
    if units is None:
        cls = ACTIVE_SETS[granularity(bundle)]
        if cls.sequential:
            return cls.drive(bundle, backend, x, no_exit, clock)
        units = cls(bundle, x)
    last = len(bundle.segments) - 1
    latency, active = [], []
    for seg in bundle.segments[units.first:]:
        i = seg["index"]
        active.append(units.count)
        feeds = units.feeds(seg)
        t0 = clock()
        out = backend.run(i, feeds)
        latency.append(clock() - t0)
        units.update(i, out, "all" if i == last else "none" if no_exit else "exits")
        if units.count == 0:
            break
    outcome = units.finish(backend, clock)
    outcome.segment_latency_ns, outcome.active = latency, active
    return outcome


def warm_up(bundle: Bundle, backend: Backend, x: np.ndarray, runs: int,
            no_exit: bool = True, execute_fn: Any = None) -> None:
    """Run one input through every segment `runs` times (allocations, caches, lazy init);
    `execute_fn`: another strategy's executor (`device_runners.strategies`)."""
    for _ in range(runs):
        (execute_fn or execute)(bundle, backend, x[:1], no_exit=no_exit)


# ----------------------------------------------------------------- classification helpers


def run_single(bundle: Bundle, backend: Backend, x: np.ndarray, labels: np.ndarray | None,
               no_exit: bool = False) -> tuple[dict[str, list], bool]:
    """Each sample on its own through `execute`; the per-sample records and whether the
    run completed (Ctrl-C keeps what was done). For scripts and benchmarks; `edge-ee-run`
    drives `execute` through `device_runners.session`."""
    rec: dict[str, list] = {"exit": [], "prediction": [], "confidence": [], "label": [],
                            "segment_latency_ns": []}
    try:
        for n in range(len(x)):
            out = execute(bundle, backend, x[n : n + 1], no_exit)
            rec["exit"].append(int(out.exit[0]))
            rec["prediction"].append(int(out.prediction[0]))
            rec["confidence"].append(float(out.confidence[0]))
            rec["label"].append(None if labels is None else int(labels[n]))
            rec["segment_latency_ns"].append(out.segment_latency_ns)
    except KeyboardInterrupt:
        return rec, False
    return rec, True


def run_batch(bundle: Bundle, backend: Backend, x: np.ndarray, labels: np.ndarray | None,
              batch_size: int = 32, no_exit: bool = False
              ) -> tuple[dict[str, list], list[dict[str, Any]], bool]:
    """Shrinking batches through `execute`: sample records, per-batch records, completed."""
    rec: dict[str, list] = {"exit": [], "prediction": [], "confidence": [], "label": []}
    batches: list[dict[str, Any]] = []
    try:
        for start in range(0, len(x), batch_size):
            out = execute(bundle, backend, x[start : start + batch_size], no_exit)
            rec["exit"] += out.exit.tolist()
            rec["prediction"] += out.prediction.tolist()
            rec["confidence"] += out.confidence.astype(float).tolist()
            rec["label"] += ([None] * len(out.exit) if labels is None
                             else [int(v) for v in labels[start : start + len(out.exit)]])
            batches.append({"size": len(out.exit), "active": out.active,
                            "segment_latency_ns": out.segment_latency_ns})
    except KeyboardInterrupt:
        return rec, batches, False
    return rec, batches, True
