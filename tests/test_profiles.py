"""Hardware profiles: every shipped YAML loads, the schema is strict, detection works."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from device_runners.errors import ProfileError
from device_runners.profiles import (
    detect_profile,
    load_all_profiles,
    load_profile,
    parse_profile,
    profile_mismatch_warnings,
)
from hardware_profiles import PROFILE_DIR, list_profiles

EXPECTED = {
    "raspberry-pi-4", "raspberry-pi-5", "jetson-nano-5w", "jetson-nano-10w",
    "jetson-orin-nano-8gb-7w", "jetson-orin-nano-8gb-15w", "jetson-orin-nano-8gb-25w",
    "jetson-orin-nx-16gb-25w", "generic-x86_64",
}


def _raw(name: str) -> dict:
    return yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())


def test_every_shipped_profile_loads_and_is_named_after_its_file() -> None:
    assert EXPECTED <= set(list_profiles())
    for profile in load_all_profiles():
        assert Path(profile.source_path).stem == profile.name
        assert profile.max_power_mw > profile.idle_power_mw > 0
        assert profile.cpu.max_freq_mhz > 0 and profile.cpu.cores > 0
        assert profile.to_dict()["name"] == profile.name


def test_shipped_numbers() -> None:
    pi4, pi5 = load_profile("raspberry-pi-4"), load_profile("raspberry-pi-5")
    assert (pi4.cpu.model, pi4.cpu.cores, pi4.cpu.max_freq_mhz) == ("Cortex-A72", 4, 1800.0)
    assert (pi5.cpu.model, pi5.cpu.max_freq_mhz) == ("Cortex-A76", 2400.0)
    assert pi5.peak_gflops.cpu.fp32 == pytest.approx(4 * 2.4 * 16)
    orin = load_profile("jetson-orin-nano-8gb-15w")
    assert orin.power_mode.expected == "NV Power Mode: 15W"
    assert orin.power_sensors[0].kind == "ina3221_hwmon"
    assert orin.power_sensors[0].board_total_rail == "VDD_IN"
    nano = load_profile("jetson-nano-10w")
    assert nano.peak_gflops.accelerator.fp16 == pytest.approx(471.9)
    assert nano.power_sensors[0].board_total_rail == "POM_5V_IN"


def test_every_number_has_a_source_comment() -> None:
    for name in list_profiles():
        for line in (PROFILE_DIR / f"{name}.yaml").read_text().splitlines():
            key, _, value = line.partition(":")
            value = value.split("#")[0].strip()
            if key.strip().endswith(("_mhz", "_mw", "_gbps", "_c")) or key.strip() in (
                    "fp32", "fp16", "int8"):
                if value not in ("", "null"):
                    assert "#" in line, f"{name}: no source comment on {line!r}"


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_is_named_with_the_allowed_ones(tmp_path: Path) -> None:
    data = _raw("raspberry-pi-4")
    data["cpu"]["modle"] = "typo"
    with pytest.raises(ProfileError) as err:
        load_profile(_write(tmp_path, data))
    assert "'modle'" in str(err.value) and "max_freq_mhz" in str(err.value)


def test_numeric_field_without_unit_is_rejected(tmp_path: Path) -> None:
    data = _raw("raspberry-pi-4")
    data["cpu"]["max_freq"] = data["cpu"].pop("max_freq_mhz")
    with pytest.raises(ProfileError, match=r"cpu\.max_freq.*no unit.*max_freq_mhz"):
        load_profile(_write(tmp_path, data))
    data = _raw("raspberry-pi-4")
    data["idle_power"] = 1
    with pytest.raises(ProfileError, match="idle_power"):
        parse_profile(data)


def test_missing_required_field(tmp_path: Path) -> None:
    data = _raw("jetson-orin-nano-8gb-7w")
    del data["idle_power_mw"]
    with pytest.raises(ProfileError, match="missing the required field 'idle_power_mw'"):
        load_profile(_write(tmp_path, data))


def test_malformed_yaml_and_wrong_types(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncpu: [unclosed\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(bad)
    data = _raw("raspberry-pi-5")
    data["cpu"]["cores"] = "four"
    with pytest.raises(ProfileError, match=r"cpu\.cores"):
        parse_profile(data)
    data = _raw("raspberry-pi-5")
    data["max_power_mw"] = 100
    with pytest.raises(ProfileError, match="below idle_power_mw"):
        parse_profile(data)


def test_unknown_name_lists_available() -> None:
    with pytest.raises(ProfileError, match="raspberry-pi-5"):
        load_profile("raspberry-pi-9")


def _tree(tmp_path: Path, model: str | None, tegra: str | None = None) -> Path:
    if model is not None:
        (tmp_path / "proc/device-tree").mkdir(parents=True)
        (tmp_path / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    if tegra is not None:
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc/nv_tegra_release").write_text(tegra)
    return tmp_path


def test_detect_raspberry_pis(tmp_path: Path) -> None:
    pi4 = _tree(tmp_path / "a", "Raspberry Pi 4 Model B Rev 1.4")
    assert detect_profile(pi4, machine="aarch64").profile == "raspberry-pi-4"
    pi5 = _tree(tmp_path / "b", "Raspberry Pi 5 Model B Rev 1.0")
    assert detect_profile(pi5, machine="aarch64").profile == "raspberry-pi-5"


def _fake_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, output: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    tool = bindir / name
    tool.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def test_detect_orin_nano_uses_nvpmodel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path / "root", "NVIDIA Jetson Orin Nano Developer Kit",
                 "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64")
    no_tool = detect_profile(root, machine="aarch64", check_power_mode=False)
    assert set(no_tool.candidates) == {"jetson-orin-nano-8gb-7w", "jetson-orin-nano-8gb-15w",
                                       "jetson-orin-nano-8gb-25w"}
    assert "could not be confirmed" in no_tool.reason
    _fake_tool(tmp_path, monkeypatch, "nvpmodel", "NV Power Mode: 25W\n1")
    found = detect_profile(root, machine="aarch64")
    assert found.profile == "jetson-orin-nano-8gb-25w"
    assert "NV Power Mode: 25W" in found.power_mode_output
    warnings = profile_mismatch_warnings(load_profile("jetson-orin-nano-8gb-7w"), root,
                                         machine="aarch64")
    assert len(warnings) == 1 and "expects 'NV Power Mode: 7W'" in warnings[0]
    assert profile_mismatch_warnings(load_profile("jetson-orin-nano-8gb-25w"), root,
                                     machine="aarch64") == []


def test_detect_jetson_nano_needs_t210(tmp_path: Path) -> None:
    root = _tree(tmp_path, "NVIDIA Jetson Nano Developer Kit",
                 "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64")
    det = detect_profile(root, machine="aarch64", check_power_mode=False)
    assert set(det.candidates) == {"jetson-nano-5w", "jetson-nano-10w"}


def test_detect_generic_and_nothing(tmp_path: Path) -> None:
    assert detect_profile(tmp_path, machine="x86_64").profile == "generic-x86_64"
    none = detect_profile(tmp_path, machine="riscv64")
    assert none.profile is None and "--profile" in none.reason


def test_mismatch_warns_on_device_and_frequency(tmp_path: Path) -> None:
    root = _tree(tmp_path, "Raspberry Pi 5 Model B Rev 1.0")
    freq = root / "sys/devices/system/cpu/cpu0/cpufreq"
    freq.mkdir(parents=True)
    (freq / "cpuinfo_max_freq").write_text("1500000\n")
    warnings = profile_mismatch_warnings(load_profile("raspberry-pi-4"), root, machine="aarch64")
    assert any("does not look like profile 'raspberry-pi-4'" in w for w in warnings)
    assert any("1500 MHz" in w and "1800 MHz" in w for w in warnings)
    (freq / "cpuinfo_max_freq").write_text("2400000\n")
    assert profile_mismatch_warnings(load_profile("raspberry-pi-5"), root, machine="aarch64") == []
