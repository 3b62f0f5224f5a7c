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
