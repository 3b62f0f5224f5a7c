"""Energy integration, idle subtraction, the threaded sampler and source fallback."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from device_runners.errors import PowerSourceError
from device_runners.power.base import PowerSource
from device_runners.power.energy import (
    choose_power_source,
    energy_summary,
    integrate_energy_mj,
    measure_idle_baseline,
    min_window_ns,
    window_energy,
)
from device_runners.power.sampler import PowerSampler
from device_runners.profiles import load_profile

S = 1_000_000_000  # ns per second


def jetpack5_tree(root: Path) -> None:
    """Orin, JetPack 5/6 ina3221 hwmon layout (see test_power_sources for the full one)."""
    d = root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    d.mkdir(parents=True)
    for name, text in {"name": "ina3221", "in1_label": "VDD_IN", "in1_input": "5080",
                       "curr1_input": "1200", "in2_label": "VDD_SOC", "in2_input": "5072",
                       "curr2_input": "300", "in7_label": "sum of shunt voltages",
                       "in7_input": "19"}.items():
        (d / name).write_text(text + "\n")


def test_trapezoid_against_hand_computed_value() -> None:
    t = [0, 1 * S, 2 * S, 4 * S]
    p = [1000.0, 2000.0, 2000.0, 0.0]
    # (1000+2000)/2*1 + 2000*1 + (2000+0)/2*2 = 1500 + 2000 + 2000 mJ
    assert integrate_energy_mj(t, p) == pytest.approx(5500.0)
    # window 0.5 s .. 3 s: p(0.5)=1500, p(3)=1000 -> 875 + 2000 + 1500
    assert integrate_energy_mj(t, p, S // 2, 3 * S) == pytest.approx(4375.0)
    # unsorted input gives the same answer; a single sample gives none
    assert integrate_energy_mj(t[::-1], p[::-1]) == pytest.approx(5500.0)
    assert integrate_energy_mj([0], [5.0]) == 0.0


def test_window_energy_flags_gaps_coverage_and_errors() -> None:
    t = np.arange(0, 11 * S, S // 10)  # 10 Hz for 11 s at 2500 mW
    p = np.full(t.shape, 2500.0)
    w = window_energy(t, p, S, 9 * S, period_ms=100)
    assert w.energy_mj == pytest.approx(2500.0 * 8)
    assert w.mean_power_mw == pytest.approx(2500.0)
    assert w.complete and w.n_samples == 81
    holey = np.concatenate((t[:30], t[60:]))
    w2 = window_energy(holey, np.full(holey.shape, 2500.0), S, 9 * S, period_ms=100)
    assert not w2.complete and "gap of 3100.0 ms" in w2.warnings[0]
    w3 = window_energy(t, p, S, 20 * S, period_ms=100)
    assert not w3.complete and "cover 9.900 s of the 19.000 s" in w3.warnings[0]
    w4 = window_energy(t, p, S, 9 * S, period_ms=100, error_windows=[(5 * S, 6 * S)])
    assert not w4.complete and "failed 1 time" in w4.warnings[0]


def test_idle_subtraction_and_energy_per_inference() -> None:
    t = np.arange(0, 10 * S + 1, S // 100)
    w = window_energy(t, np.full(t.shape, 3000.0), 0, 10 * S, period_ms=10)
    out = energy_summary(w, 100, update_period_ms=10, idle_power_mw=2000.0)
    assert out["energy_mj"] == pytest.approx(30000.0)
    assert out["above_idle_energy_mj"] == pytest.approx(10000.0)
    assert out["energy_per_inference_mj"] == pytest.approx(300.0)
    assert out["above_idle_energy_per_inference_mj"] == pytest.approx(100.0)
    assert out["label"] == "measured" and out["warnings"] == []
    est = energy_summary(w, 100, update_period_ms=10, is_estimate=True)
    assert est["label"] == "estimated" and est["above_idle_energy_mj"] is None


def test_short_window_gets_no_per_inference_energy() -> None:
    assert min_window_ns(10) == 2 * S  # 2 s floor
    assert min_window_ns(1000) == 20 * S  # 20 updates of a 1 s sensor
    t = np.arange(0, S + 1, S // 100)
    w = window_energy(t, np.full(t.shape, 1000.0), 0, S, period_ms=10)
    out = energy_summary(w, 50, update_period_ms=10, idle_power_mw=900.0)
    assert out["energy_mj"] == pytest.approx(1000.0)
    assert out["energy_per_inference_mj"] is None
    assert "shorter than the 2.00 s" in out["warnings"][0]


class ConstantSource(PowerSource):
    name = "constant-test"

    def __init__(self, power_mw: float) -> None:
        super().__init__("/", update_period_ms=1.0)
        self.power_mw = power_mw
        self.reads = 0

    def read(self) -> dict[str, float]:
        self.reads += 1
        return {"rail": self.power_mw}


def test_sampler_real_thread_and_idle_baseline() -> None:
    src = ConstantSource(1234.0)
    sampler = PowerSampler(src, period_ms=10)
    assert sampler.period_ms == 10.0
    with sampler:
        idle = measure_idle_baseline(sampler, 0.15)
        run_start = sampler.mark("run_start")
        time.sleep(0.1)
        run_end = sampler.mark("run_end")
    assert not src.is_open  # the sampler opened it, so it closed it
    ts = [s.timestamp_ns for s in sampler.samples]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert 15 <= len(ts) <= 40  # ~26 at 10 ms over ~0.25 s, tolerant of a busy machine
    assert idle.power_mw == pytest.approx(1234.0)
    assert idle.complete and not idle.is_estimate
    t, p = sampler.series()
    energy = integrate_energy_mj(t, p, run_start, run_end)
    assert energy == pytest.approx(1234.0 * (run_end - run_start) / S)
    labels = [m["label"] for m in sampler.to_dict()["markers"]]
    assert labels == ["idle_start", "idle_end", "run_start", "run_end"]
    assert sampler.healthy


def test_choose_finds_the_profile_sensor(tmp_path: Path) -> None:
    jetpack5_tree(tmp_path)
    src, reason = choose_power_source(load_profile("jetson-orin-nano-8gb-15w"), "auto",
                                      root=str(tmp_path))
    assert src.name == "ina3221_hwmon" and src.is_open
    assert "ina3221_hwmon" in reason
    assert src.total_mw(src.read()) == pytest.approx(6096.0)


def test_choose_falls_back_to_estimated_then_null(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no vcgencmd
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/stat").write_text("cpu  1 0 1 8 0 0 0 0 0 0\n")
    profile = load_profile("raspberry-pi-5")
    src, reason = choose_power_source(profile, "auto", root=str(tmp_path))
    assert src.name == "estimated" and src.is_estimate
    assert "ESTIMATED" in reason and "rpi5_pmic" in reason and len(reason) < 250  # one short line
    assert any("not found on PATH" in f for f in src.probe_failures)  # each probe's reason kept
    src, reason = choose_power_source(profile, "rapl", root=str(tmp_path))
    assert src.name == "estimated" and "rapl" in reason
    src, reason = choose_power_source(None, "auto", root=str(tmp_path))
    assert src.name == "null" and "--profile" in reason
    src, reason = choose_power_source(profile, "null", root=str(tmp_path))
    assert src.name == "null" and "latency only" in reason
    src, reason = choose_power_source(None, "estimated", root=str(tmp_path))
    assert src.name == "null" and "needs a hardware profile" in reason
    empty = tmp_path / "no-proc"
    empty.mkdir()
    src, reason = choose_power_source(profile, "estimated", root=str(empty))
    assert src.name == "null" and "proc/stat" in reason


def test_choose_rejects_only_unknown_names() -> None:
    with pytest.raises(PowerSourceError, match="unknown power source 'ina999'"):
        choose_power_source(None, "ina999")
