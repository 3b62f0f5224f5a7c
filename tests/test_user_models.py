"""Bring your own model: a network defined outside the package, its weights, its cut points,
E2CM exits fitted from it and a bundle the device runs — and the bad inputs around it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_ee.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]
USER = ROOT / "examples" / "user_resnet.py"
pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def user_r20(data_dir: Path):
    from edge_ee.models.user import load_user_model
    return load_user_model(f"{USER}:resnet20", str(data_dir / "resnet-cifar10" / "resnet20.npz"))


def test_user_model_matches_the_builtin(user_r20, data_dir: Path) -> None:
    from edge_ee.models.resnet_cifar import load_resnet_cifar
    model, source = user_r20
    ref = load_resnet_cifar(data_dir / "resnet-cifar10" / "resnet20.npz").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
    assert len(source) == 64  # the weights' sha256


def test_cut_points_and_auto(user_r20) -> None:
    from edge_ee.inspect import auto_cuts, cut_points
    pts = cut_points(user_r20[0], (3, 32, 32))
    names = [p.name for p in pts]
    assert {"layer1.0", "layer2.0", "layer3.1", "layer1", "layer2"} <= set(names)
    assert "layer1.0.conv1" not in names  # a skip connection crosses it
    fr = [p.flops_fraction for p in pts]
    assert fr == sorted(fr) and 0 < fr[0] < fr[-1] < 1
    cuts = auto_cuts(pts, 4)
    assert len(cuts) == 4 and not any(a != b and b.startswith(a + ".") for a in cuts for b in cuts)


def test_exits_on_a_user_model_run_on_the_device(user_r20, tmp_path: Path) -> None:
    from device_runners.backends import open_backend
    from device_runners.executor import execute
    from device_runners.manifest import load_bundle
    from edge_ee.data import load_cifar10_jpeg
    from edge_ee.exitnet import from_module
    from edge_ee.exits import ExitSpec
    from edge_ee.pipeline import FitConfig, export, fit_exits
    train = load_cifar10_jpeg("train", per_class=60)
    test = load_cifar10_jpeg("test", per_class=10)
    net = from_module(user_r20[0], ["layer1.2", "layer2.1", "layer3.0"], (3, 32, 32), "user-r20")
    fitted = fit_exits(net, train, FitConfig(exit_spec=ExitSpec(kind="lda", pool=2), max_drop=0.05),
                       progress=False)
    path = export(net, fitted.heads, tmp_path / "b", test, "user-r20",
                  {"point": fitted.chosen.to_json()})
    b = load_bundle(path)
    out = execute(b, open_backend(b), test.normalised())
    assert (out.prediction == test.labels).mean() > 0.6


def test_bad_models_are_typed_errors(tmp_path: Path, data_dir: Path) -> None:
    from edge_ee.exitnet import from_module
    from edge_ee.models.user import load_user_model
    bad = tmp_path / "bad.py"
    bad.write_text("def notmodule():\n    return 3\n")
    with pytest.raises(ModelError, match=r"not a torch\.nn\.Module"):
        load_user_model(f"{bad}:notmodule")
    with pytest.raises(ModelError, match="no callable"):
        load_user_model(f"{bad}:missing")
    with pytest.raises(ModelError, match="cannot import module"):
        load_user_model("no_such_package_xyz.mod:make")
    with pytest.raises(ModelError, match="missing"):
        load_user_model(f"{USER}:resnet56", str(data_dir / "resnet-cifar10" / "resnet20.npz"))
    model, _ = load_user_model(f"{USER}:resnet20")
    with pytest.raises(ModelError, match="single-tensor boundary"):
        from_module(model, ["layer1.0.conv1"], (3, 32, 32))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "edge_ee.cli", "inspect", "--model",
                        f"{bad}:notmodule", "--input-shape", "3,32,32"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and "not a torch.nn.Module" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "edge_ee.cli", "inspect", "--model",
                        f"{USER}:resnet20", "--input-shape", "3,32,32", "--auto", "3"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "layer2.0" in r.stdout and r.stdout.strip().splitlines()[-1].startswith("--cut ")


def test_build_cli_with_a_user_model_and_npz_data(tmp_path: Path, data_dir: Path) -> None:
    """`edge-ee build --model file.py:factory --weights ... --data data.npz --cut ...`, then
    `edge-ee-run` on the bundle; a user model without --data, or data without a declared
    normalisation, is a clear error (exit 2)."""
    from edge_ee.data import CIFAR_MEAN, CIFAR_STD, load_cifar10_jpeg
    tr, te = load_cifar10_jpeg("train", per_class=60), load_cifar10_jpeg("test", per_class=10)
    data = tmp_path / "mine.npz"
    np.savez(data, x_train=tr.images, y_train=tr.labels, x_test=te.images, y_test=te.labels,
             classes=np.array(tr.classes))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    weights = str(data_dir / "resnet-cifar10" / "resnet20.npz")
    base = [sys.executable, "-m", "edge_ee.cli", "-q", "build", "--model", f"{USER}:resnet20",
            "--weights", weights]
    mean, std = ",".join(map(str, CIFAR_MEAN)), ",".join(map(str, CIFAR_STD))
    r = subprocess.run([*base, "--data", str(data), "--cut", "layer1.2,layer2.2", "--exit",
                        "lda:2", "--max-drop", "0.05", "--mean", mean, "--std", std, "--out",
                        str(tmp_path / "b")], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["model"]["name"].startswith("user_resnet") and m["input"]["raw"]["mean"] == list(CIFAR_MEAN)
    run = subprocess.run([sys.executable, "-m", "device_runners.cli", str(tmp_path / "b"),
                          "--out", str(tmp_path / "r.json"), "--quiet", "--idle-s", "0",
                          "--profile", "none", "--power-source", "null"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    for extra, msg in (([], "needs --data"), (["--data", str(data)], "pass --mean and --std")):
        r = subprocess.run([*base, *extra, "--out", str(tmp_path / "c")], capture_output=True,
                           text=True, env=env, timeout=300)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
