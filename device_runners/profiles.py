"""Hardware profiles: schema, loader, device detection and mismatch warnings.

A profile (one YAML file in `hardware_profiles/`) describes one device in one power
mode. This module is shared by the host (reports compare measurements with the
profile) and the device (the runner picks a profile and power sensors from it), so it
only uses the standard library and pyyaml. The loader is strict: unknown keys, missing
required fields and numeric fields whose name carries no unit are errors.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from device_runners.errors import ProfileError
from device_runners.schema import profile_number, safe_yaml_load
from hardware_profiles import list_profiles, profile_files

SCHEMA_VERSION = 1

#: A numeric field must end in one of these (or sit under a key that does).
UNIT_SUFFIXES = (
    "_mhz", "_ghz", "_hz", "_mw", "_w", "_mj", "_j", "_c", "_gbps", "_gflops",
    "_ns", "_us", "_ms", "_s", "_mb", "_gb", "_kib", "_v", "_mv", "_ma", "_a", "_pct",
)
#: Counts and versions: numeric but without a physical unit.
UNITLESS_KEYS = frozenset({"cores", "schema_version"})


@dataclass(frozen=True)
class CpuSpec:
    model: str
    arch: str
    cores: int
    max_freq_mhz: float


@dataclass(frozen=True)
class AcceleratorSpec:
    name: str
    cores: int | None = None
    max_freq_mhz: float | None = None


@dataclass(frozen=True)
class PeakGflops:
    """Peak throughput in GFLOP/s (int8: giga-ops/s); None = no native support."""

    fp32: float | None
    fp16: float | None
    int8: float | None


@dataclass(frozen=True)
class PeakThroughput:
    cpu: PeakGflops
    accelerator: PeakGflops | None = None


@dataclass(frozen=True)
class PowerSensorSpec:
    kind: str
    paths: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    board_total_rail: str | None = None
    update_period_ms: float | None = None


#: The only programs a profile can ask for, by name: each board's own power-mode query.
#: A profile never carries a command line (it would run whatever the file says).
POWER_MODE_TOOLS: dict[str, tuple[str, ...]] = {"nvpmodel": ("nvpmodel", "-q")}


@dataclass(frozen=True)
class PowerModeSpec:
    name: str
    tool: str | None = None  # a key of POWER_MODE_TOOLS
    expected: str | None = None

    @property
    def argv(self) -> tuple[str, ...] | None:
        return POWER_MODE_TOOLS.get(self.tool) if self.tool else None


@dataclass(frozen=True)
class ThermalSpec:
    throttle_temp_c: float
    shutdown_temp_c: float | None = None
    zones: tuple[str, ...] = ()


@dataclass(frozen=True)
class DetectSpec:
    device_tree_model: tuple[str, ...] = ()
    nv_tegra_release: str | None = None
    machine: str | None = None


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    cpu: CpuSpec
    accelerator: AcceleratorSpec | None
    peak_gflops: PeakThroughput
    memory_bandwidth_gbps: float
    idle_power_mw: float
    max_power_mw: float
    power_mode: PowerModeSpec
    thermal: ThermalSpec
    detect: DetectSpec
    power_sensors: tuple[PowerSensorSpec, ...] = ()
    description: str = ""
    schema_version: int = SCHEMA_VERSION
    source_path: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for results.json); `source_path` is left out."""
        data = asdict(self)
        data.pop("source_path", None)
        return data


# ----------------------------------------------------------------------------- parsing


def _check_units(node: Any, where: str, unit_above: bool = False) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            has_unit = unit_above or str(key).endswith(UNIT_SUFFIXES)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not has_unit and key not in UNITLESS_KEYS:
                    raise ProfileError(
                        f"profile field '{path}' = {value} has no unit in its name; rename it "
                        f"with a unit suffix such as {', '.join(UNIT_SUFFIXES[:6])} "
                        f"(e.g. '{key}_mhz', '{key}_mw')"
                    )
            else:
                _check_units(value, path, has_unit)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _check_units(item, f"{where}[{i}]", unit_above)


def _section(data: Any, where: str, required: Sequence[str], optional: Sequence[str]) -> dict:
    if not isinstance(data, Mapping):
        raise ProfileError(
            f"profile section '{where}' must be a mapping, got {type(data).__name__}; "
            f"write it as 'key: value' lines with the fields {', '.join([*required, *optional])}"
        )
    allowed = [*required, *optional]
    for key in data:
        if key not in allowed:
            raise ProfileError(
                f"unknown key '{key}' in profile section '{where or '<top>'}'; "
                f"allowed keys are: {', '.join(allowed)}. Fix the spelling or remove it"
            )
    for key in required:
        if key not in data:
            raise ProfileError(
                f"profile section '{where or '<top>'}' is missing the required field '{key}'; "
                f"add it (see hardware_profiles/raspberry-pi-4.yaml for an example)"
            )
    return dict(data)


def _num(value: Any, where: str, optional: bool = False) -> float | None:
    """A physical quantity: finite and >= 0 (schema.profile_number)."""
    return profile_number(value, where, optional)


def _int(value: Any, where: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ProfileError(f"profile field '{where}' must be a positive integer, got {value!r}")
    return value


def _str(value: Any, where: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ProfileError(f"profile field '{where}' must be a non-empty string, got {value!r}")
    return value


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProfileError(f"profile field '{where}' must be a list of strings, got {value!r}")
    return tuple(value)


def _peak(data: Any, where: str) -> PeakGflops | None:
    if data is None:
        return None
    d = _section(data, where, ["fp32", "fp16", "int8"], [])
    keys = ("fp32", "fp16", "int8")
    return PeakGflops(*(_num(d[k], f"{where}.{k}", optional=True) for k in keys))


def parse_profile(data: Any, source: str = "<dict>") -> HardwareProfile:
    """Validate a profile mapping (as loaded from YAML) and build a `HardwareProfile`."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"profile {source} must be a YAML mapping at the top level")
    _check_units(data, "")
    top = _section(
        data, "",
        ["name", "cpu", "accelerator", "peak_gflops", "memory_bandwidth_gbps",
         "idle_power_mw", "max_power_mw", "power_mode", "thermal", "detect"],
        ["schema_version", "description", "power_sensors"],
    )
    version = top.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ProfileError(
            f"profile {source} has schema_version {version!r}; this edge-ee reads version "
            f"{SCHEMA_VERSION}: upgrade edge-ee or rewrite the profile"
        )
    cpu = _section(top["cpu"], "cpu", ["model", "arch", "cores", "max_freq_mhz"], [])
    acc = top["accelerator"]
    accelerator = None
    if acc is not None:
        a = _section(acc, "accelerator", ["name"], ["cores", "max_freq_mhz"])
        accelerator = AcceleratorSpec(
            _str(a["name"], "accelerator.name"),
            _int(a.get("cores"), "accelerator.cores", optional=True),
            _num(a.get("max_freq_mhz"), "accelerator.max_freq_mhz", optional=True),
        )
    peak = _section(top["peak_gflops"], "peak_gflops", ["cpu"], ["accelerator"])
    sensors = top.get("power_sensors") or []
    if not isinstance(sensors, list):
        raise ProfileError(f"'power_sensors' in {source} must be a list of mappings")
    sensor_specs = []
    for i, s in enumerate(sensors):
        w = f"power_sensors[{i}]"
        d = _section(s, w, ["kind"], ["paths", "labels", "board_total_rail", "update_period_ms"])
        sensor_specs.append(PowerSensorSpec(
            _str(d["kind"], f"{w}.kind"), _strs(d.get("paths"), f"{w}.paths"),
            _strs(d.get("labels"), f"{w}.labels"),
            _str(d.get("board_total_rail"), f"{w}.board_total_rail", optional=True),
            _num(d.get("update_period_ms"), f"{w}.update_period_ms", optional=True),
        ))
    if isinstance(top["power_mode"], Mapping) and "check_command" in top["power_mode"]:
        raise ProfileError(
            f"profile {source}: 'power_mode.check_command' is no longer allowed (a profile must "
            f"not run commands); replace it with 'tool: nvpmodel' (known tools: "
            f"{', '.join(POWER_MODE_TOOLS)}) or delete the line")
    pm = _section(top["power_mode"], "power_mode", ["name"], ["tool", "expected"])
    tool = _str(pm.get("tool"), "power_mode.tool", True)
    if tool is not None and tool not in POWER_MODE_TOOLS:
        raise ProfileError(f"profile {source}: power_mode.tool {tool!r} is not a known tool; "
                           f"choose one of {sorted(POWER_MODE_TOOLS)} or delete the line")
    th = _section(top["thermal"], "thermal", ["throttle_temp_c"], ["shutdown_temp_c", "zones"])
    det = _section(top["detect"], "detect", [],
                   ["device_tree_model", "nv_tegra_release", "machine"])
    profile = HardwareProfile(
        name=_str(top["name"], "name"),
        cpu=CpuSpec(_str(cpu["model"], "cpu.model"), _str(cpu["arch"], "cpu.arch"),
                    _int(cpu["cores"], "cpu.cores"), _num(cpu["max_freq_mhz"], "cpu.max_freq_mhz")),
        accelerator=accelerator,
        peak_gflops=PeakThroughput(_peak(peak["cpu"], "peak_gflops.cpu"),
                                   _peak(peak.get("accelerator"), "peak_gflops.accelerator")),
        memory_bandwidth_gbps=_num(top["memory_bandwidth_gbps"], "memory_bandwidth_gbps"),
        idle_power_mw=_num(top["idle_power_mw"], "idle_power_mw"),
        max_power_mw=_num(top["max_power_mw"], "max_power_mw"),
        power_sensors=tuple(sensor_specs),
        power_mode=PowerModeSpec(_str(pm["name"], "power_mode.name"),
                                 tool,
                                 _str(pm.get("expected"), "power_mode.expected", True)),
        thermal=ThermalSpec(_num(th["throttle_temp_c"], "thermal.throttle_temp_c"),
                            _num(th.get("shutdown_temp_c"), "thermal.shutdown_temp_c", True),
                            _strs(th.get("zones"), "thermal.zones")),
        detect=DetectSpec(_strs(det.get("device_tree_model"), "detect.device_tree_model"),
                          _str(det.get("nv_tegra_release"), "detect.nv_tegra_release", True),
                          _str(det.get("machine"), "detect.machine", True)),
        description=str(top.get("description") or ""),
        source_path=source,
    )
    if profile.max_power_mw < profile.idle_power_mw:
        raise ProfileError(
            f"profile {source}: max_power_mw ({profile.max_power_mw}) is below idle_power_mw "
            f"({profile.idle_power_mw}); swap or correct them"
        )
    return profile


def load_profile(name_or_path: str | os.PathLike[str]) -> HardwareProfile:
    """Load a shipped profile by name (e.g. 'raspberry-pi-5') or any YAML file by path."""
    text = str(name_or_path)
    path = Path(text)
    is_path = path.suffix in (".yaml", ".yml") or os.sep in text or path.exists()
    if not is_path:
        path = profile_files().joinpath(f"{text}.yaml")  # type: ignore[assignment]
        if not path.is_file():
            raise ProfileError(
                f"no hardware profile named '{text}'; available: {', '.join(list_profiles())}, "
                f"or pass the path of your own YAML file"
            )
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc}; check the path") from exc
    except UnicodeDecodeError as exc:
        raise ProfileError(f"profile {path} is not UTF-8 text ({exc}); save it as UTF-8") from exc
    data = safe_yaml_load(raw, ProfileError, f"profile {path}")
    return parse_profile(data, str(path))


def load_all_profiles() -> list[HardwareProfile]:
    return [load_profile(n) for n in list_profiles()]


# ----------------------------------------------------------------------------- detection


def _read(root: str | os.PathLike[str], rel: str) -> str | None:
    try:
        text = (Path(root) / rel).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text.replace("\x00", "").strip()


def run_tool(argv: Sequence[str], timeout_s: float = 5.0) -> str | None:
    """Run one of the fixed POWER_MODE_TOOLS found on PATH; stdout, or None when absent/failing."""
    if tuple(argv) not in POWER_MODE_TOOLS.values():
        raise ProfileError(f"{' '.join(argv)!r} is not a known power-mode tool")
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


@dataclass(frozen=True)
class Detection:
    """What `detect_profile` found: the chosen profile (or None), candidates and why."""

    profile: str | None
    candidates: tuple[str, ...]
    reason: str
    device_tree_model: str | None = None
    power_mode_output: str | None = None


def _matches(p: HardwareProfile, model: str | None, tegra: str | None, machine: str) -> bool:
    d = p.detect
    if not (d.device_tree_model or d.nv_tegra_release or d.machine):
        return False
    if d.device_tree_model and not (model and any(s in model for s in d.device_tree_model)):
        return False
    if d.nv_tegra_release and not (tegra and d.nv_tegra_release in tegra):
        return False
    if d.machine:
        # A machine-only profile (generic x86_64) matches only when no device tree says more.
        if d.machine != machine or (not d.device_tree_model and model):
            return False
    return True


def detect_profile(root: str | os.PathLike[str] = "/", *, check_power_mode: bool = True,
                   machine: str | None = None,
                   profiles: Sequence[HardwareProfile] | None = None) -> Detection:
    """Pick the shipped profile that matches this device (and its power mode).

    Reads `<root>/proc/device-tree/model` and `<root>/etc/nv_tegra_release`; when several
    profiles match (one per power mode) and `check_power_mode` is true, runs the board's
    fixed power-mode tool (`power_mode.tool`, e.g. nvpmodel → `nvpmodel -q`) and keeps
    the profile whose expected string appears.
    """
    model = _read(root, "proc/device-tree/model")
    tegra = _read(root, "etc/nv_tegra_release")
    machine = machine or platform.machine()
    pool = list(profiles) if profiles is not None else load_all_profiles()
    found = [p for p in pool if _matches(p, model, tegra, machine)]
    names = tuple(p.name for p in found)
    if not found:
        return Detection(None, (), f"no profile matches device-tree model {model!r}, "
                         f"machine {machine!r}; pass --profile NAME or a YAML path", model)
    if len(found) == 1:
        return Detection(found[0].name, names, f"device-tree model {model!r} / machine "
                         f"{machine!r} matches {found[0].name}", model)
    outputs: dict[str, str | None] = {}
    if check_power_mode:
        for p in found:
            argv, expected = p.power_mode.argv, p.power_mode.expected
            if argv and expected:
                cmd = " ".join(argv)
                if cmd not in outputs:
                    outputs[cmd] = run_tool(argv)
                out = outputs[cmd]
                if out is not None and expected in out:
                    return Detection(p.name, names, f"{model!r} matches {', '.join(names)}; "
                                     f"`{cmd}` reports {expected!r}", model, out)
    first_out = next((o for o in outputs.values() if o), None)
    return Detection(found[0].name, names, f"{model!r} matches {', '.join(names)} but the "
                     f"power mode could not be confirmed; using {found[0].name}, pass --profile "
                     "to choose", model, first_out)


def profile_mismatch_warnings(profile: HardwareProfile, root: str | os.PathLike[str] = "/", *,
                              check_power_mode: bool = True,
                              machine: str | None = None) -> list[str]:
    """Warnings (never errors) when this device or its power mode differs from `profile`."""
    warnings: list[str] = []
    model = _read(root, "proc/device-tree/model")
    tegra = _read(root, "etc/nv_tegra_release")
    machine = machine or platform.machine()
    if not _matches(profile, model, tegra, machine):
        warnings.append(
            f"this device (device-tree model {model!r}, machine {machine!r}) does not look like "
            f"profile '{profile.name}' ({profile.description or profile.cpu.model}); "
            "comparisons with the profile may be meaningless"
        )
    pm = profile.power_mode
    if check_power_mode and pm.argv and pm.expected:
        out = run_tool(pm.argv)
        if out is None:
            warnings.append(f"could not run `{' '.join(pm.argv)}` to confirm power mode "
                            f"'{pm.name}'; run as a user allowed to call it")
        elif pm.expected not in out:
            first = out.strip().splitlines()[0] if out.strip() else ""
            warnings.append(f"power mode is {first!r}, profile '{profile.name}' expects "
                            f"{pm.expected!r}; switch mode (e.g. `sudo nvpmodel -m N`) or "
                            "choose the matching profile")
    khz = _read(root, "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if khz and khz.isdigit():
        mhz = int(khz) / 1000.0
        if abs(mhz - profile.cpu.max_freq_mhz) > 0.05 * profile.cpu.max_freq_mhz:
            warnings.append(f"CPU max frequency is {mhz:.0f} MHz, profile '{profile.name}' says "
                            f"{profile.cpu.max_freq_mhz:.0f} MHz (power mode or overclock?)")
    return warnings
