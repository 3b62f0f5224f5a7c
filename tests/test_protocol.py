"""Benchmark protocol: warm-up/min-runs/min-duration logic, percentiles, system state."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from device_runners.errors import EdgeEEError
from device_runners.protocol import (
    ProtocolConfig,
    decode_throttled,
    percentiles,
    pin_to_cores,
    run_timed,
    system_state,
)

MS = 1_000_000


class FakeClock:
    """A perf_counter_ns stand-in; the workload advances it by a chosen latency."""

    def __init__(self, latencies_ms: list[float]) -> None:
        self.now = 0
        self.latencies = list(latencies_ms)

    def __call__(self) -> int:
        return self.now

    def work(self) -> None:
        self.now += int((self.latencies.pop(0) if self.latencies else 2.0) * MS)


def test_config_validation() -> None:
    cfg = ProtocolConfig(pin_cores=[1, 0])
    assert cfg.pin_cores == (1, 0) and cfg.to_dict()["pin_cores"] == [1, 0]
    with pytest.raises(EdgeEEError, match=r"max_runs \(5\) must be >= min_runs \(10\)"):
        ProtocolConfig(min_runs=10, max_runs=5)
    with pytest.raises(EdgeEEError, match=r"threads must be >= 1.*--threads"):
        ProtocolConfig(threads=0)


def test_runs_until_min_runs_and_min_duration() -> None:
    clock = FakeClock([10.0, 3.0, 3.0])  # the first (cold) call is slow
    cfg = ProtocolConfig(warmup_runs=3, min_runs=5, min_duration_s=0.05, max_runs=1000)
    out = run_timed(clock.work, cfg, clock_ns=clock)
    assert out["first_inference_ns"] == 10 * MS
    assert out["warmup_latency_ns"] == [10 * MS, 3 * MS, 3 * MS]
    assert out["runs"] == 25  # 50 ms of 2 ms calls: duration, not min_runs, decides
    assert set(out["latency_ns"]) == {2 * MS}
    assert out["stopped_by"] == "min_runs_and_duration"
    assert out["end_timestamp_ns"] >= out["start_timestamp_ns"]
    assert out["protocol"]["min_runs"] == 5
    few = run_timed(FakeClock([]).work, ProtocolConfig(warmup_runs=0, min_runs=7,
                                                       min_duration_s=0.0), clock_ns=FakeClock([]))
    assert few["runs"] == 7


def test_max_runs_and_max_duration_cap_the_run() -> None:
    clock = FakeClock([])
    out = run_timed(clock.work, ProtocolConfig(warmup_runs=0, min_runs=5, min_duration_s=10.0,
                                               max_runs=40), clock_ns=clock)
    assert out["runs"] == 40 and out["stopped_by"] == "max_runs"
    assert out["first_inference_ns"] == 2 * MS  # no warm-up: the first measured call
    clock = FakeClock([])
    out = run_timed(clock.work, ProtocolConfig(warmup_runs=0, min_runs=5, min_duration_s=10.0,
                                               max_duration_s=0.1), clock_ns=clock)
    assert out["runs"] == 50 and out["stopped_by"] == "max_duration_s"


def test_real_clock_run() -> None:
    calls = []
    out = run_timed(lambda: calls.append(sum(range(1000))),
                    ProtocolConfig(warmup_runs=2, min_runs=3, min_duration_s=0.02))
    assert len(calls) == 2 + out["runs"] and out["runs"] >= 3
    assert all(x > 0 for x in out["latency_ns"])
    assert out["duration_ns"] >= 0.02e9


def test_percentiles() -> None:
    p = percentiles(list(range(1, 101)))
    assert p["p50_ns"] == pytest.approx(50.5)
    assert p["p90_ns"] == pytest.approx(90.1)
    assert p["p95_ns"] == pytest.approx(95.05)
    assert p["p99_ns"] == pytest.approx(99.01)
    assert (p["max_ns"], p["min_ns"], p["count"]) == (100.0, 1.0, 100)
    with pytest.raises(EdgeEEError, match="no latencies"):
        percentiles([])


def test_decode_throttled() -> None:
    bits = decode_throttled(0x50005)
    assert bits["under_voltage_now"] and bits["throttled_now"]
    assert bits["under_voltage_occurred"] and bits["throttled_occurred"]
    assert not bits["arm_freq_capped_now"] and not bits["soft_temp_limit_occurred"]
    assert not any(decode_throttled(0).values())


def test_system_state_on_fake_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i, gov in enumerate(["ondemand", "performance"]):
        freq = tmp_path / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        freq.mkdir(parents=True)
        (freq / "scaling_governor").write_text(gov + "\n")
        (freq / "scaling_cur_freq").write_text("1500000\n")
        (freq / "cpuinfo_max_freq").write_text("1800000\n")
    zone = tmp_path / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("48312\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "vcgencmd"
    tool.write_text('#!/bin/sh\n[ "$1" = get_throttled ] && echo "throttled=0x50005"\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bindir))
    state = system_state(tmp_path)
    assert state["governor"] == {"cpu0": "ondemand", "cpu1": "performance"}
    assert state["governor_summary"] == "ondemand,performance"
    assert state["cpu_freq_mhz"] == {"cpu0": 1500.0, "cpu1": 1500.0}
    assert state["cpu_max_freq_mhz"]["cpu1"] == 1800.0
    assert state["thermal_zones"] == [{"zone": "thermal_zone0", "type": "cpu-thermal",
                                       "temp_c": 48.312}]
    assert state["throttled"]["raw"] == "0x50005" and state["throttled"]["throttled_now"]
    assert state["power_mode"] is None  # no nvpmodel on PATH
    assert state["peak_rss_kib"] > 0
    bare = system_state(tmp_path / "nothing", run_tools=False)
    assert bare["governor"] == {} and bare["thermal_zones"] == [] and bare["throttled"] is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_pin_to_cores_and_restore() -> None:
    before = sorted(os.sched_getaffinity(0))
    try:
        previous = pin_to_cores([before[0]])
        assert previous == before and sorted(os.sched_getaffinity(0)) == [before[0]]
    finally:
        os.sched_setaffinity(0, before)
    with pytest.raises(EdgeEEError, match="pass existing core numbers"):
        pin_to_cores([9999])
    seen = []
    run_timed(lambda: seen.append(sorted(os.sched_getaffinity(0))),
              ProtocolConfig(warmup_runs=0, min_runs=1, min_duration_s=0.0,
                             pin_cores=(before[0],)))
    assert seen == [[before[0]]] and sorted(os.sched_getaffinity(0)) == before
