"""`edge-ee pack-runner` builds a zipapp that runs a bundle from the archive alone."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edge_ee.pack import pack_runner


def test_zipapp_contents(tmp_path: Path) -> None:
    pyz = pack_runner(tmp_path / "edge-ee-run.pyz")
    names = zipfile.ZipFile(pyz).namelist()
    assert "__main__.py" in names and "device_runners/cli.py" in names
    assert "hardware_profiles/raspberry-pi-5.yaml" in names
    assert not any(n.startswith(("edge_ee/", "converters/")) for n in names)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.shared_data
def test_zipapp_runs_a_bundle(tmp_path: Path, fashion_bundle: Path) -> None:
    pyz = pack_runner(tmp_path / "edge-ee-run.pyz")
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-I", str(pyz), str(fashion_bundle), "--out", str(out),
                        "--quiet", "--idle-s", "0", "--profile", "raspberry-pi-5",
                        "--power-source", "estimated"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["environment"]["runner_file"].endswith("edge-ee-run.pyz/device_runners")
    assert res["profile"]["name"] == "raspberry-pi-5" and res["power"]["is_estimate"]


def test_zipapp_names_missing_dependencies(tmp_path: Path) -> None:
    """On a python without numpy/pyyaml/runtime (-S: no site-packages) the runner says what
    to install, with exit code 2 and no traceback."""
    pyz = pack_runner(tmp_path / "edge-ee-run.pyz")
    r = subprocess.run([sys.executable, "-I", "-S", str(pyz), "bundle"], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "missing numpy, pyyaml" in r.stderr and "pip install numpy pyyaml onnxruntime" in r.stderr
    assert "Traceback" not in r.stderr


def test_pack_config_refuses_bad_values(tmp_path: Path) -> None:
    from edge_ee.errors import ConfigError
    from edge_ee.pack import PackConfig
    for kw, needle in (({"platform": "win_amd64"}, "choose from"),
                       ({"platform": "linux_aarch64", "python": "311"}, "MAJOR.MINOR"),
                       ({"platform": "linux_aarch64", "glibc": "2"}, "ldd --version"),
                       ({"wheels": tmp_path}, "need --platform"),
                       ({"platform": "linux_aarch64", "wheels": tmp_path / "no"}, "not a folder")):
        with pytest.raises(ConfigError, match=needle):
            PackConfig(out=tmp_path / "r.pyz", **kw)


def test_device_requirements_are_the_device_extra() -> None:
    import tomllib

    from edge_ee.pack import DEVICE_REQUIREMENTS, REPO_CONSTRAINTS
    project = tomllib.loads((REPO_CONSTRAINTS.parent / "pyproject.toml").read_text())["project"]
    assert tuple(project["optional-dependencies"]["device"]) == DEVICE_REQUIREMENTS


def test_pack_runner_offline_without_wheels_says_how(tmp_path: Path) -> None:
    """An empty --wheels folder: a typed error naming the pip download that fills it, and the
    CLI exits 2 without a traceback."""
    (tmp_path / "wheels").mkdir()
    r = subprocess.run([sys.executable, "-m", "edge_ee.cli", "pack-runner", "--platform",
                        "linux_aarch64", "--wheels", str(tmp_path / "wheels"), "--out",
                        str(tmp_path / "r.pyz")], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 2, r.stderr
    assert "pip download" in r.stderr and "manylinux_2_31_aarch64" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "r.pyz").exists()


@pytest.mark.slow
@pytest.mark.shared_data
def test_vendored_pyz_runs_on_a_bare_python(tmp_path: Path, fashion_bundle: Path,
                                             fashion_samples: Path) -> None:
    """`--platform linux_x86_64` vendors numpy, pyyaml and onnxruntime (wheels from the
    package index): a python with none of them (-I -S: no site-packages) runs a real bundle,
    the libraries extracted under SHIV_ROOT, and decides exactly like the installed runner."""
    from device_runners.cli import main as run_main
    from edge_ee.pack import PackConfig
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    bare = [sys.executable, "-I", "-S"]
    assert subprocess.run([*bare, "-c", "import numpy"], capture_output=True).returncode != 0
    pyz = pack_runner(PackConfig(out=tmp_path / "edge-ee-run-x86_64.pyz", platform="linux_x86_64",
                                 python=py))
    names = zipfile.ZipFile(pyz).namelist()
    assert any(n.startswith("site-packages/onnxruntime/capi/") and ".so" in n for n in names)
    assert "site-packages/device_runners/cli.py" in names
    args = [str(fashion_bundle), "--input", str(fashion_samples), "--quiet", "--idle-s", "0",
            "--profile", "none", "--power-source", "null"]
    env = {"PATH": "/usr/bin:/bin", "SHIV_ROOT": str(tmp_path / "extracted")}
    r = subprocess.run([*bare, str(pyz), *args, "--out", str(tmp_path / "pyz.json")],
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert run_main([*args, "--out", str(tmp_path / "installed.json")]) == 0
    got, want = (json.loads((tmp_path / f).read_text()) for f in ("pyz.json", "installed.json"))
    assert got["environment"]["runner_file"].startswith(str(tmp_path / "extracted"))
    assert got["self_check"]["passed"] and got["backend"]["name"] == "onnxruntime"
    assert got["samples"]["exit"] == want["samples"]["exit"]
    assert got["samples"]["prediction"] == want["samples"]["prediction"]
    # whose peak RSS: the bare runner process, not this torch-holding test process
    assert got["peak_rss_process"]["torch_loaded"] is False
    assert want["peak_rss_process"]["torch_loaded"] is True
    assert got["peak_rss_kib"] < want["peak_rss_kib"]  # the bare runner holds no torch
    print(f"peak RSS: vendored pyz {got['peak_rss_kib'] / 1024:.1f} MiB, in-process "
          f"{want['peak_rss_kib'] / 1024:.1f} MiB")
