"""Every power source against a fake file tree laid out like the real sysfs."""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from device_runners.errors import PowerSourceError
from device_runners.power import (
    EstimatedPower,
    Ina2xxHwmon,
    JetsonIna3221Hwmon,
    JetsonIna3221Iio,
    NullPower,
    Rapl,
    RaspberryPi5Pmic,
    UsbMeterCsv,
    available_power_sources,
    create_power_source,
)
from device_runners.power.sampler import PowerSampler
from device_runners.profiles import load_profile


def _files(base: Path, files: dict[str, str]) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (base / name).write_text(text + "\n")
    return base


def jetpack4_tree(root: Path) -> Path:
    """Jetson Nano, L4T R32: ina3221x IIO driver, power in mW."""
    return _files(root / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0", {
        "name": "ina3221x",
        "rail_name_0": "POM_5V_IN", "in_power0_input": "3600", "in_voltage0_input": "5000",
        "in_current0_input": "720",
        "rail_name_1": "POM_5V_GPU", "in_power1_input": "800", "in_voltage1_input": "5000",
        "in_current1_input": "160",
        "rail_name_2": "POM_5V_CPU", "in_power2_input": "1200", "in_voltage2_input": "5000",
        "in_current2_input": "240",
    })


def jetpack5_tree(root: Path) -> Path:
    """Orin Nano, L4T R35/R36: mainline ina3221 hwmon, mV and mA, with the sum channel."""
    return _files(root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3", {
        "name": "ina3221", "update_interval": "5",
        "in1_label": "VDD_IN", "in1_input": "5080", "curr1_input": "1200", "curr1_crit": "5000",
        "in2_label": "VDD_CPU_GPU_CV", "in2_input": "5072", "curr2_input": "400",
        "in3_label": "VDD_SOC", "in3_input": "5072", "curr3_input": "300",
        "in4_input": "12", "in5_input": "4", "in6_input": "3",  # shunt voltages, no label
        "in7_label": "sum of shunt voltages", "in7_input": "19", "curr4_input": "1900",
    })


def test_registry_names() -> None:
    assert set(available_power_sources()) == {
        "ina3221_iio", "ina3221_hwmon", "rpi5_pmic", "rapl", "ina2xx_hwmon", "usb_meter_csv",
        "estimated", "null"}
    with pytest.raises(PowerSourceError, match=r"unknown power source 'tegrastats'.*rapl"):
        create_power_source("tegrastats")


def test_jetpack4_iio(tmp_path: Path) -> None:
    jetpack4_tree(tmp_path)
    with JetsonIna3221Iio(tmp_path) as src:
        reading = src.read()
        assert reading == {"POM_5V_IN": 3600.0, "POM_5V_GPU": 800.0, "POM_5V_CPU": 1200.0}
        assert src.total_mw(reading) == 3600.0  # the input rail alone, nested rails not added
        assert src.describe()["board_total_rail"] == "POM_5V_IN"
        assert not src.is_estimate


def test_jetpack5_hwmon_skips_sum_of_shunts(tmp_path: Path) -> None:
    jetpack5_tree(tmp_path)
    src = create_power_source("ina3221_hwmon", root=tmp_path)
    src.open()
    reading = src.read()
    assert set(reading) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert reading["VDD_IN"] == pytest.approx(5080 * 1200 / 1000)  # 6096 mW
    assert reading["VDD_SOC"] == pytest.approx(1521.6)
    assert src.total_mw(reading) == pytest.approx(6096.0)
    assert src.update_period_ms == 5.0
    assert any("module input" in c for c in src.describe()["caveats"])


def test_jetson_profile_labels_and_missing_total(tmp_path: Path) -> None:
    jetpack5_tree(tmp_path)
    src = JetsonIna3221Hwmon(tmp_path, labels=["VDD_CPU_GPU_CV", "VDD_SOC"])
    src.open()
    assert src.total_mw(src.read()) == pytest.approx(2028.8 + 1521.6)
    assert any("no board-total rail" in c for c in src.caveats)
    with pytest.raises(PowerSourceError, match="board-total rail 'VDD_TOTAL' not found"):
        JetsonIna3221Hwmon(tmp_path, board_total_rail="VDD_TOTAL").open()
    with pytest.raises(PowerSourceError, match="no INA3221 found"):
        JetsonIna3221Iio(tmp_path).open()


def _put_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    tool = bindir / name
    tool.write_text("#!/bin/sh\n" + body)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


PMIC_OUTPUT = """\
     3V7_WL_SW_A current(0)=0.00000000A
       3V3_SYS_A current(1)=0.05855200A
       1V8_SYS_A current(2)=0.17666000A
      VDD_CORE_A current(7)=1.42880000A
     3V7_WL_SW_V volt(8)=3.71716200V
       3V3_SYS_V volt(9)=3.30768600V
       1V8_SYS_V volt(10)=1.79865600V
      VDD_CORE_V volt(15)=0.90660000V
         EXT5V_V volt(24)=5.14872000V
          BATT_V volt(25)=0.00000000V
"""


def fake_vcgencmd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _put_on_path(tmp_path, monkeypatch, "vcgencmd",
                 f'case "$1" in\n pmic_read_adc) cat <<\'EOF\'\n{PMIC_OUTPUT}EOF\n;;\n'
                 ' get_throttled) echo "throttled=0x50005" ;;\n'
                 ' *) echo "error=1 error_msg=\\"Command not registered\\""; exit 1 ;;\nesac\n')


def test_rpi5_pmic_pairs_current_and_voltage(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake_vcgencmd(tmp_path, monkeypatch)
    src = RaspberryPi5Pmic()
    src.open()
    reading = src.read()
    assert reading["VDD_CORE"] == pytest.approx(1.4288 * 0.9066 * 1000)  # 1295.35 mW
    assert reading["3V7_WL_SW"] == 0.0
    assert "EXT5V" not in reading and "BATT" not in reading  # voltage only, no current
    expected = 1295.35 + 0.058552 * 3307.686 + 0.17666 * 1798.656
    assert src.total_mw(reading) == pytest.approx(expected, abs=0.01)
    meta = src.describe()
    assert any("understates" in c for c in meta["caveats"])
    assert meta["ext5v_voltage_mv"] == pytest.approx(5148.72)


def test_rpi5_pmic_missing_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PowerSourceError, match="'vcgencmd' not found on PATH"):
        RaspberryPi5Pmic().open()
    _put_on_path(tmp_path, monkeypatch, "vcgencmd", "echo 'error=2 error_msg=\"bad\"'\n")
    with pytest.raises(PowerSourceError, match="Raspberry Pi 5"):
        RaspberryPi5Pmic().open()


def rapl_tree(root: Path, package_uj: int, core_uj: int, psys_uj: int | None = None) -> Path:
    base = root / "sys/class/powercap"
    _files(base / "intel-rapl:0", {"name": "package-0", "energy_uj": str(package_uj),
                                   "max_energy_range_uj": str(2**32 - 1)})
    _files(base / "intel-rapl:0:0", {"name": "core", "energy_uj": str(core_uj),
                                     "max_energy_range_uj": str(2**32 - 1)})
    if psys_uj is not None:
        _files(base / "intel-rapl:1", {"name": "psys", "energy_uj": str(psys_uj),
                                       "max_energy_range_uj": str(2**32 - 1)})
    return base


def test_rapl_power_from_energy_with_wraparound(tmp_path: Path) -> None:
    base = rapl_tree(tmp_path, package_uj=4_294_000_000, core_uj=1_000_000)
    clock = iter([10**9, 2 * 10**9, 3 * 10**9])
    src = Rapl(tmp_path, clock_ns=lambda: next(clock))
    src.open()
    # 1 s later the package counter wrapped: 967_295 + 4_032_705 = 5 J -> 5000 mW
    (base / "intel-rapl:0/energy_uj").write_text("4032705\n")
    (base / "intel-rapl:0:0/energy_uj").write_text("4000000\n")
    reading = src.read()
    assert reading["package-0"] == pytest.approx(5000.0)
    assert reading["package-0/core"] == pytest.approx(3000.0)
    assert src.total_mw(reading) == pytest.approx(5000.0)  # core is nested, never added
    (base / "intel-rapl:0/energy_uj").write_text("6032705\n")  # +2 J in 1 s
    assert src.read()["package-0"] == pytest.approx(2000.0)


def test_rapl_psys_is_the_total(tmp_path: Path) -> None:
    base = rapl_tree(tmp_path, 0, 0, psys_uj=0)
    clock = iter([0, 500_000_000])
    src = Rapl(tmp_path, clock_ns=lambda: next(clock))
    src.open()
    (base / "intel-rapl:1/energy_uj").write_text("4000000\n")  # 4 J in 0.5 s
    (base / "intel-rapl:0/energy_uj").write_text("3000000\n")
    reading = src.read()
    assert src.total_mw(reading) == pytest.approx(8000.0)
    assert src.board_total_rail == "psys"


def test_rapl_permission_denied_says_how_to_fix(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    rapl_tree(tmp_path, 1, 1)
    real_read_text = Path.read_text

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(PowerSourceError) as err:
        Rapl(tmp_path).open()
    assert "permission denied" in str(err.value) and "root" in str(err.value)
    assert "chmod o+r" in str(err.value)


def test_chmod_000_file(tmp_path: Path) -> None:
    rapl_tree(tmp_path, 1, 1)
    target = tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj"
    target.chmod(0)
    if os.geteuid() == 0:  # root reads anyway: the run must still work
        src = Rapl(tmp_path)
        src.open()
        assert "package-0" in src.read()
    else:
        with pytest.raises(PowerSourceError, match="chmod"):
            Rapl(tmp_path).open()


def test_directory_in_place_of_file(tmp_path: Path) -> None:
    iio = jetpack4_tree(tmp_path)
    (iio / "in_power1_input").unlink()
    (iio / "in_power1_input").mkdir()
    src = JetsonIna3221Iio(tmp_path)
    src.open()
    with pytest.raises(PowerSourceError, match=r"cannot read .*in_power1_input"):
        src.read()


def test_no_rapl(tmp_path: Path) -> None:
    with pytest.raises(PowerSourceError, match="modprobe"):
        Rapl(tmp_path).open()


def test_ina219_and_ina226_hwmon(tmp_path: Path) -> None:
    hw = tmp_path / "sys/class/hwmon"
    _files(hw / "hwmon0", {"name": "cpu_thermal", "temp1_input": "45000"})
    _files(hw / "hwmon2", {"name": "ina219", "power1_input": "2450000", "in1_input": "5100",
                           "curr1_input": "480", "in0_input": "48"})
    src = Ina2xxHwmon(tmp_path)
    src.open()
    assert src.read() == {"ina219@hwmon2": pytest.approx(2450.0)}
    assert src.total_mw(src.read()) == pytest.approx(2450.0)
    assert src.caveats == []
    _files(hw / "hwmon3", {"name": "ina226", "label": "5V_IN", "in1_input": "5000",
                           "curr1_input": "500", "update_interval": "35"})
    both = Ina2xxHwmon(tmp_path, board_total_rail="5V_IN")
    both.open()
    reading = both.read()
    assert reading["5V_IN"] == pytest.approx(2500.0)
    assert both.total_mw(reading) == pytest.approx(2500.0)
    assert both.update_period_ms == 35.0
    with pytest.raises(PowerSourceError, match="no INA219/INA226"):
        Ina2xxHwmon(tmp_path / "empty").open()


def test_usb_meter_csv_alignment(tmp_path: Path) -> None:
    now_s = time.time()
    mono_now = time.monotonic_ns()
    log = tmp_path / "meter.csv"
    rows = [f"{now_s - 2 + 0.5 * i:.3f},5.10,{0.5 + 0.1 * i:.2f}" for i in range(5)]
    log.write_text("Timestamp (s),Voltage (V),Current (A)\n" + "\n".join(rows) + "\n")
    src = UsbMeterCsv(csv_path=str(log))
    src.open()
    samples = src.load_samples()
    assert [p for _, p in samples] == pytest.approx([2550.0, 3060.0, 3570.0, 4080.0, 4590.0])
    assert abs(samples[-1][0] - mono_now) < 100_000_000  # wall clock mapped onto monotonic
    assert src.read() == {"meter": pytest.approx(4590.0)}
    assert src.update_period_ms == pytest.approx(500.0, rel=0.01)
    shifted = UsbMeterCsv(csv_path=str(log), clock_offset_ms=250.0)
    shifted.open()
    delta = samples[0][0] - shifted.load_samples()[0][0]
    assert abs(delta - 250_000_000) < 1_000_000
    window = src.load_samples(samples[1][0], samples[3][0])
    assert len(window) == 3


def test_usb_meter_csv_power_column_and_errors(tmp_path: Path) -> None:
    log = tmp_path / "m.csv"
    log.write_text("time_ms,power_mw\n1000,1500\n2000,1700\n")
    src = UsbMeterCsv(csv_path=str(log), timestamps_are_wall_clock=False)
    src.open()
    assert src.load_samples() == [(1_000_000_000, 1500.0), (2_000_000_000, 1700.0)]
    log.write_text("time_ms,power\n1000,1.5\n")
    with pytest.raises(PowerSourceError, match="power_w"):
        UsbMeterCsv(csv_path=str(log)).open()
    ok = UsbMeterCsv(csv_path=str(log), power_column="power", power_unit="w",
                     timestamps_are_wall_clock=False)
    ok.open()
    assert ok.load_samples() == [(1_000_000_000, 1500.0)]
    with pytest.raises(PowerSourceError, match="csv_path"):
        UsbMeterCsv()


def test_estimated_model_from_process_cpu_time(tmp_path: Path) -> None:
    stat_file = tmp_path / "proc/stat"
    stat_file.parent.mkdir()
    stat_file.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\n"
                         "cpu1 50 0 50 400 0 0 0 0 0 0\n")
    cpu = iter([0, 150_000_000, 150_000_000])  # CPU time of this process (ns)
    wall = iter([0, 100_000_000, 200_000_000])  # monotonic wall clock (ns)
    src = EstimatedPower(tmp_path, profile=load_profile("raspberry-pi-4"),
                         cpu_time_ns=lambda: next(cpu), wall_time_ns=lambda: next(wall))
    src.open()
    assert src.n_cpus == 2
    # 150 ms of CPU in 100 ms of wall on 2 CPUs: 75 % of the device busy
    assert src.read()["estimated_total"] == pytest.approx(2700 + 0.75 * (6400 - 2700))
    assert src.read()["estimated_total"] == pytest.approx(2700)  # then idle
    assert src.is_estimate and src.describe()["label"] == "estimated"
    assert "ESTIMATED" in src.describe()["caveats"][0]
    assert "this process" in src.describe()["caveats"][0]
    with pytest.raises(PowerSourceError, match="profile"):
        EstimatedPower(tmp_path)
    stat_file.write_text("intr 1 2 3\n")
    with pytest.raises(PowerSourceError, match="proc"):
        EstimatedPower(tmp_path, profile=load_profile("raspberry-pi-4")).open()


def test_estimated_ignores_other_processes_and_sees_its_own_load() -> None:
    """Real clocks: a CPU-bound process beside the runner does not raise the estimate;
    the runner's own busy loop does, by its share of the machine's CPUs."""
    import subprocess
    import sys

    src = EstimatedPower("/", profile=load_profile("generic-x86_64"))
    src.open()
    span = src.max_power_mw - src.idle_power_mw
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        src.read()
        time.sleep(0.5)  # this process sleeps while the other one spins
        other = (src.read()["estimated_total"] - src.idle_power_mw) / span
    finally:
        hog.kill()
        hog.wait()
    assert other < 0.05, f"another process's load leaked into the estimate: {other:.3f}"
    src.read()
    c0, w0 = time.process_time_ns(), time.monotonic_ns()
    while time.monotonic_ns() - w0 < 300_000_000:
        pass
    own = (src.read()["estimated_total"] - src.idle_power_mw) / span
    expected = (time.process_time_ns() - c0) / ((time.monotonic_ns() - w0) * src.n_cpus)
    assert own == pytest.approx(expected, abs=0.05)
    assert own * src.n_cpus > 0.25  # the busy loop got at least a quarter of a core


def test_null_source() -> None:
    with NullPower() as src:
        assert src.read() == {}
        assert src.total_mw(src.read()) is None


def test_sensor_deleted_mid_run_does_not_kill_the_sampler(tmp_path: Path) -> None:
    hwmon = jetpack5_tree(tmp_path)
    src = JetsonIna3221Hwmon(tmp_path)
    with PowerSampler(src, period_ms=5) as sampler:
        time.sleep(0.06)
        shutil.rmtree(hwmon)
        time.sleep(0.06)
        assert sampler._thread is not None and sampler._thread.is_alive()
    samples = sampler.samples
    good = [s for s in samples if s.error is None]
    bad = [s for s in samples if s.error is not None]
    assert len(good) >= 3 and len(bad) >= 3
    assert all(s.total_mw == pytest.approx(6096.0) for s in good)
    assert "disappeared" in bad[0].error
    assert not sampler.healthy
    (start_ns, end_ns), = sampler.error_windows
    assert start_ns == bad[0].timestamp_ns and end_ns == bad[-1].timestamp_ns
    assert sampler.to_dict()["error_windows_ns"] == [[start_ns, end_ns]]
