"""The one executor loop and the one measurement session, on a real Fashion-MNIST bundle.

Single-sample and shrinking-batch runs must take the same exits; `no_exit` runs every
segment; the session repeats whole passes until `min_runs`, stops at `max_runs`, and
keeps what ran when interrupted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device_runners.backends import open_backend
from device_runners.errors import BackendError
from device_runners.executor import execute
from device_runners.manifest import load_bundle
from device_runners.session import SessionConfig, measure

pytestmark = pytest.mark.shared_data
QUIET = {"profile": "none", "power_source": "null", "idle_s": 0.0, "warmup_runs": 1}


def test_batch_and_single_take_the_same_exits(fashion_bundle: Path, fashion) -> None:
    b = load_bundle(fashion_bundle)
    be = open_backend(b)
    x = fashion[1].subset(np.arange(0, 500, 5)).normalised()
    batch = execute(b, be, x)
    single = [execute(b, be, x[n : n + 1]) for n in range(len(x))]
    assert batch.exit.tolist() == [int(o.exit[0]) for o in single]
    assert batch.prediction.tolist() == [int(o.prediction[0]) for o in single]
    assert batch.active[0] == len(x) and batch.active == sorted(batch.active, reverse=True)
    assert len(batch.segment_latency_ns) == len(batch.active) and min(batch.segment_latency_ns) > 0
    assert len(set(batch.exit.tolist())) > 1  # exits really fire on real data
    off = execute(b, be, x, no_exit=True)
    assert (off.exit == len(b.segments) - 1).all() and off.active == [len(x)] * len(b.segments)


def test_graph_feeds_are_named(fashion_bundle: Path, fashion) -> None:
    b = load_bundle(fashion_bundle)
    be = open_backend(b)
    x = fashion[1].subset(np.arange(4)).normalised()
    name = b.segments[0]["inputs"][0]
    assert be.run(0, {name: x}).keys() == be.run(0, x).keys()
    with pytest.raises(BackendError, match="needs inputs"):
        be.run(0, {"wrong": x})


def test_session_passes_and_caps(fashion_bundle: Path, fashion) -> None:
    b = load_bundle(fashion_bundle)
    be = open_backend(b)
    x = fashion[1].subset(np.arange(0, 500, 50)).normalised()  # 10 samples
    y = fashion[1].labels[np.arange(0, 500, 50)]
    run = measure(b, be, x, y, SessionConfig(min_runs=25, **QUIET), log=lambda m: None)
    s = run["samples"]
    assert len(s["exit"]) == 30 and sorted(set(s["pass"])) == [0, 1, 2]  # whole passes
    assert s["label"][:10] == y.tolist() and run["complete"]
    capped = measure(b, be, x, y, SessionConfig(min_runs=25, max_runs=13, **QUIET),
                     log=lambda m: None)
    assert len(capped["samples"]["exit"]) == 13
    batch = measure(b, be, x, None, SessionConfig(mode="batch", batch_size=4, **QUIET),
                    log=lambda m: None)
    assert [r["size"] for r in batch["batches"]] == [4, 4, 2]
    assert "segment_latency_ns" not in batch["samples"]
    assert batch["samples"]["exit"] == s["exit"][:10]
