"""`edge-ee pack-runner`: a single-file runner for devices (a Python zipapp).

Two kinds:
- plain (the default): `device_runners` and `hardware_profiles` only (code and YAML),
  ~100 KiB; runs as `python3 edge-ee-run.pyz BUNDLE …` on a device that has numpy, pyyaml
  and one runtime installed, and names the missing ones with the install command;
- self-contained (`--platform linux_aarch64|linux_x86_64 --python 3.11`): the device
  dependencies (`DEVICE_REQUIREMENTS`, the `device` extra: numpy, pyyaml, onnxruntime and
  what they need) vendored as that platform's manylinux wheels, packed with shiv; the device
  needs only that Python 3 and no network. Native extensions cannot be imported from a zip,
  so on its first run the archive extracts its site-packages once to
  `~/.shiv/<name>_<build id>/` (`--extract-root` at pack time, or `SHIV_ROOT` at run time,
  chooses another folder; later runs reuse it).

The wheels come from the package index at pack time (`pip download --platform …
--only-binary=:all:`, versions from the repository's constraints.txt when present) or from
`--wheels DIR` on an offline host. Written through a temporary file and a rename.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import zipapp
from dataclasses import dataclass
from pathlib import Path

import device_runners
import hardware_profiles
from device_runners.files import atomic_path
from edge_ee.errors import ConfigError, PackError

log = logging.getLogger(__name__)

#: what `edge-ee-run` needs on a device: the `device` extra of pyproject.toml
DEVICE_REQUIREMENTS = ("numpy>=1.23", "pyyaml>=6", "onnxruntime>=1.17")
#: --platform name → the machine part of its manylinux wheel tags
PLATFORMS = {"linux_aarch64": "aarch64", "linux_x86_64": "x86_64"}
#: the constraints file beside the package in a source checkout (pinned versions)
REPO_CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"
ENTRY_POINT = "device_runners.cli:main"
SHEBANG = "/usr/bin/env python3"

MAIN = '''"""edge-ee-run packed as a zipapp: check the three dependencies, then run."""
import importlib.util
import sys

INSTALL = "python3 -m pip install numpy pyyaml onnxruntime  (or ai-edge-litert for TFLite)"
missing = [name for name, mod in (("numpy", "numpy"), ("pyyaml", "yaml"))
           if importlib.util.find_spec(mod) is None]
if not any(importlib.util.find_spec(m) for m in ("onnxruntime", "ai_edge_litert",
                                                 "tflite_runtime")):
    missing.append("a runtime (onnxruntime, ai-edge-litert or tflite-runtime)")
if missing:
    print(f"edge-ee-run: error: missing {', '.join(missing)}; install with:\\n  {INSTALL}\\n"
          "or pack a self-contained runner: edge-ee pack-runner --platform linux_aarch64",
          file=sys.stderr)
    sys.exit(2)

from device_runners.cli import main

sys.exit(main())
'''


@dataclass(frozen=True)
class PackConfig:
    """How to pack the runner (`edge-ee pack-runner` flags map 1:1)."""

    out: Path = Path("edge-ee-run.pyz")
    platform: str | None = None  # None: the plain pyz; else a key of PLATFORMS
    python: str = "3.11"  # the device's Python, MAJOR.MINOR (wheels are built per version)
    glibc: str = "2.31"  # the device's glibc or newer wheels are refused (Pi OS 12: 2.36)
    wheels: Path | None = None  # offline: a folder of wheels for that platform, no index
    constraints: Path | None = None  # pinned versions; None: the repo's constraints.txt if any
    extract_root: str | None = None  # where the device extracts; None: ~/.shiv

    def __post_init__(self) -> None:
        if self.platform is not None and self.platform not in PLATFORMS:
            raise ConfigError(f"--platform {self.platform!r}: choose from "
                              f"{', '.join(PLATFORMS)}")
        if not _version_ok(self.python, 3):
            raise ConfigError(f"--python {self.python!r}: write MAJOR.MINOR, e.g. 3.11")
        if not _version_ok(self.glibc, 2):
            raise ConfigError(f"--glibc {self.glibc!r}: write 2.MINOR, e.g. 2.31 "
                              "(ldd --version on the device)")
        if self.platform is None and (self.wheels or self.extract_root):
            raise ConfigError("--wheels and --extract-root need --platform (a self-contained "
                              "runner); the plain .pyz vendors nothing")
        if self.wheels is not None and not Path(self.wheels).is_dir():
            raise ConfigError(f"--wheels {self.wheels}: not a folder; fill one with pip "
                              "download (see `edge-ee pack-runner --help`)")


def _version_ok(text: str, major: int) -> bool:
    parts = text.split(".")
    return len(parts) == 2 and parts[0] == str(major) and parts[1].isdigit()


def pack_runner(out: str | Path | PackConfig) -> Path:
    """Build the runner; `out` is a path (the plain pyz) or a full `PackConfig`. Returns
    the written path."""
    cfg = out if isinstance(out, PackConfig) else PackConfig(out=Path(out))
    if cfg.platform is None:
        return _pack_plain(Path(cfg.out))
    return _pack_vendored(cfg)


def _copy_packages(dest: Path) -> None:
    for pkg in (device_runners, hardware_profiles):
        src = Path(pkg.__file__).parent
        shutil.copytree(src, dest / src.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _pack_plain(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "app"
        root.mkdir()
        _copy_packages(root)
        (root / "__main__.py").write_text(MAIN)
        with atomic_path(dest, suffix=".pyz.tmp", executable=True) as part:
            zipapp.create_archive(root, part, interpreter=SHEBANG, compressed=True)
    return dest


def target_args(cfg: PackConfig) -> list[str]:
    """pip's cross-platform flags: CPython `cfg.python`, manylinux wheels for the platform's
    machine that need at most glibc `cfg.glibc` (pip does not widen explicit tags itself)."""
    machine = PLATFORMS[cfg.platform or ""]
    py = cfg.python.replace(".", "")
    newest = int(cfg.glibc.split(".")[1])
    tags = [f"manylinux_2_{v}_{machine}" for v in range(newest, 16, -1)]
    tags.append(f"manylinux2014_{machine}")
    return ["--only-binary=:all:", "--implementation", "cp", "--python-version", cfg.python,
            "--abi", f"cp{py}", "--abi", "abi3", "--abi", "none",
            *[a for t in tags for a in ("--platform", t)]]


def _pip(args: list[str], what: str, hint: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"]
    log.info("%s: %s", what, " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-6:])
        raise PackError(f"{what} failed (pip exit {r.returncode}):\n{tail}\n{hint}")


def download_command(cfg: PackConfig, dest: str = "wheels") -> list[str]:
    """The `pip download` that fills a --wheels folder for `cfg` (run where there is network)."""
    constraints = cfg.constraints or (REPO_CONSTRAINTS if REPO_CONSTRAINTS.is_file() else None)
    return ["download", *target_args(cfg), "-d", dest,
            *(["-c", str(constraints)] if constraints else []), *DEVICE_REQUIREMENTS]


def _pack_vendored(cfg: PackConfig) -> Path:
    try:
        import shiv  # noqa: F401  (only checks that the packer is installed)
    except ModuleNotFoundError as err:
        raise PackError("a self-contained runner is packed with shiv: pip install -c "
                        "constraints.txt -e '.[pack]'") from err
    dest = Path(cfg.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheels = Path(cfg.wheels) if cfg.wheels else Path(tmp) / "wheels"
        if cfg.wheels is None:
            _pip(download_command(cfg, str(wheels)), f"downloading {cfg.platform} wheels for "
                 f"Python {cfg.python}",
                 "No network here? Run on a connected machine:\n  python3 -m pip "
                 + " ".join(download_command(cfg)) + "\nand pass --wheels wheels")
        site = Path(tmp) / "site-packages"
        _pip(["install", *target_args(cfg), "--target", str(site), "--no-index",
              "--find-links", str(wheels), "--no-compile", *DEVICE_REQUIREMENTS],
             f"installing the {cfg.platform} wheels into the archive",
             f"--wheels {wheels} must hold {cfg.platform} wheels (Python {cfg.python}, glibc ≤ "
             f"{cfg.glibc}) of {', '.join(DEVICE_REQUIREMENTS)} and their dependencies; fill "
             "it with: python3 -m pip " + " ".join(download_command(cfg)))
        for extra in site.glob("bin"):  # console scripts of the dependencies: not needed
            shutil.rmtree(extra)
        _copy_packages(site)
        with atomic_path(dest, suffix=".pyz.tmp", executable=True) as part:
            cmd = [sys.executable, "-m", "shiv", "--site-packages", str(site), "-e", ENTRY_POINT,
                   "-o", str(part), "-p", SHEBANG, "--reproducible", "--compressed",
                   *(["--root", cfg.extract_root] if cfg.extract_root else [])]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise PackError(f"shiv failed (exit {r.returncode}): {r.stderr.strip()[-1500:]}")
    return dest
