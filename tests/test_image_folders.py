"""Image folders and Dataset factories as `edge-ee build --data`, and image folders as
`edge-ee-run --input`: real CIFAR-10 JPEGs (extracted from the shared zip), the real CLI
in a subprocess, real onnxruntime sessions on the device side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from device_runners.errors import InputSpecError
from device_runners.images import read_folder
from edge_ee.build import UserModel
from edge_ee.data import CIFAR_MEAN, CIFAR_STD, load_cifar10_jpeg
from edge_ee.errors import ConfigError, DataError
from edge_ee.user_data import load_user_data

pytestmark = pytest.mark.shared_data
ROOT = Path(__file__).resolve().parents[1]
USER = ROOT / "examples" / "user_resnet.py"
PER_CLASS = {"train": 30, "test": 6}
NORM = {"mean": CIFAR_MEAN, "std": CIFAR_STD}


def _extract(zip_path: Path, out: Path, per_class: dict[str, int]) -> Path:
    """The first `per_class[split]` JPEGs of every class, as DIR/<split>/<class>/NNNN.jpg."""
    seen: Counter = Counter()
    with zipfile.ZipFile(zip_path) as z:
        for name in sorted(n for n in z.namelist() if n.endswith(".jpg")):
            split, cls, _ = name.split("/")
            if seen[split, cls] < per_class[split]:
                seen[split, cls] += 1
                z.extract(name, out)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return _extract(data_dir / "cifar10-jpeg.zip", tmp_path_factory.mktemp("cifar-folder"),
                    PER_CLASS)


def _copy(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_folder_streams_the_same_numbers_as_the_in_memory_split(folder: Path) -> None:
    """The folder's decoded images, hashes and class statistics equal the zip loader's
    (same JPEGs, same decoder), so a folder build reproduces the built-in path."""
    from edge_ee.api import cut
    from edge_ee.calib_source import data_sha256, sample_hashes
    from edge_ee.exits import ExitSpec
    from edge_ee.exits.fit import fit_statistics
    from edge_ee.models.user import load_user_model
    train, test, shape = load_user_data(str(folder), UserModel(**NORM))
    ref = load_cifar10_jpeg("test", per_class=PER_CLASS["test"])
    assert shape == (3, 32, 32) and train.classes == ref.classes and len(train) == 300
    np.testing.assert_array_equal(test.normalised(), ref.normalised())
    np.testing.assert_array_equal(test.labels, ref.labels)
    assert data_sha256(test) == data_sha256(ref)
    np.testing.assert_array_equal(sample_hashes(test), sample_hashes(ref))
    model, _ = load_user_model(f"{USER}:resnet20")
    net = cut(model, "layer1.2,layer2.2", shape)
    variant = [[ExitSpec.parse("lda:2")] * 2]
    (a,) = fit_statistics(net, variant, test, 16, progress=False)
    (b,) = fit_statistics(net, variant, ref, 16, progress=False)
    for sa, sb in zip(a, b, strict=True):
        np.testing.assert_allclose(sa.sums.numpy(), sb.sums.numpy(), rtol=1e-12)
        np.testing.assert_array_equal(sa.counts.numpy(), sb.counts.numpy())


def test_dataset_factory_as_data(folder: Path, tmp_path: Path) -> None:
    """`--data file.py:factory`: a user's map-style Dataset with `targets`; its labels are
    checked up front, an iterable dataset or a raising factory is a DataError."""
    ref = load_cifar10_jpeg("test", per_class=PER_CLASS["test"])
    np.savez(tmp_path / "d.npz", x=ref.images, y=ref.labels)
    code = f'''
import numpy as np, torch
from torch.utils.data import Dataset, IterableDataset
class Mine(Dataset):
    classes = {list(ref.classes)!r}
    def __init__(self, shift=0):
        z = np.load({str(tmp_path / "d.npz")!r})
        self.x, self.targets = z["x"], z["y"] + shift
    def __len__(self):
        return len(self.targets)
    def __getitem__(self, i):
        x = (self.x[i].astype(np.float32) / 255.0 - {list(CIFAR_MEAN)!r}) / {list(CIFAR_STD)!r}
        return torch.from_numpy(x.transpose(2, 0, 1).astype(np.float32)), int(self.targets[i])
def make(split):
    return Mine()
def shifted(split):
    return Mine(shift=3)
class Stream(IterableDataset):
    def __iter__(self):
        return iter(())
def stream(split):
    return Stream()
def broken(split):
    raise RuntimeError("no such split")
'''
    (tmp_path / "mine.py").write_text(code)
    train, _, shape = load_user_data(f"{tmp_path / 'mine.py'}:make", UserModel(**NORM))
    assert shape == (3, 32, 32) and len(train) == len(ref)
    np.testing.assert_allclose(train.subset(np.arange(5)).normalised(),
                               ref.subset(np.arange(5)).normalised(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(train.labels, ref.labels)
    for name, msg in (("shifted", r"labels \[10, 11, 12\]"), ("stream", "map-style"),
                      ("broken", "no such split"), ("nothing", "no callable")):
        with pytest.raises(DataError, match=msg):
            load_user_data(f"{tmp_path / 'mine.py'}:{name}", UserModel(**NORM))


def test_bad_folders_are_typed_errors_before_any_pass(folder: Path, tmp_path: Path) -> None:
    from PIL import Image
    ok = UserModel(**NORM)
    with pytest.raises(ConfigError, match="--mean and --std"):
        load_user_data(str(folder), UserModel())
    with pytest.raises(DataError, match="no such file or folder"):
        load_user_data(str(tmp_path / "nowhere"), ok)
    d = _copy(folder, tmp_path / "a")  # class folders differ between the splits
    (d / "test" / "cat").rename(d / "test" / "kitten")
    with pytest.raises(DataError, match=r"lacks \['cat'\], has extra \['kitten'\]"):
        load_user_data(str(d), ok)
    d = _copy(folder, tmp_path / "b")  # an empty class folder
    for f in (d / "test" / "dog").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="holds no images"):
        load_user_data(str(d), ok)
    d = _copy(folder, tmp_path / "c")  # a file that is not an image
    (d / "train" / "ship" / "9999.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"cannot read image .*9999\.jpg"):
        load_user_data(str(d), ok)
    d = _copy(folder, tmp_path / "e")  # one image of another size
    Image.new("RGB", (30, 30)).save(d / "test" / "frog" / "9999.jpg")
    with pytest.raises(DataError, match=r"is 30x30 .* the model takes 32x32"):
        load_user_data(str(d), ok)
    load_user_data(str(d), UserModel(**NORM, resize=32, crop=(32, 32)))  # fixed by a resize
    with pytest.raises(DataError, match="smaller than the crop"):
        load_user_data(str(folder), UserModel(**NORM, crop=(40, 40)))
    d = _copy(folder, tmp_path / "f")  # an 11th class the model cannot predict
    for split in ("train", "test"):
        (d / split / "zebra").mkdir()
        Image.new("RGB", (32, 32)).save(d / split / "zebra" / "0.jpg")
    from edge_ee.build import load_model
    with pytest.raises(DataError, match="predicts 10 classes but the data has 11"):
        load_model(f"{USER}:resnet20", str(d), UserModel(**NORM, cut="layer1.2"))


def test_device_folder_reader(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device's decoder: resize/crop from the manifest, classes by name, labels None for
    loose images; unknown classes, wrong sizes and a missing Pillow are InputSpecErrors."""
    raw = {"dtype": "uint8", "shape": [None, 32, 32, 3], "resize": 40, "crop": [32, 32]}
    classes = load_cifar10_jpeg("test", per_class=1).classes
    x, y = read_folder(folder / "test", raw, classes)
    assert x.shape == (60, 32, 32, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, np.repeat(np.arange(10), 6))
    x2, y2 = read_folder(folder / "test" / "cat", raw, classes, limit=4)  # loose images
    assert y2 is None and x2.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(x2, x[18:22])
    with pytest.raises(InputSpecError, match="lacks"):
        read_folder(folder / "test", raw, classes[:9])
    with pytest.raises(InputSpecError, match="the model takes 28x28"):
        read_folder(folder / "test", {**raw, "shape": [None, 28, 28, 3]}, classes)
    monkeypatch.setitem(sys.modules, "PIL", None)  # a device without Pillow
    with pytest.raises(InputSpecError, match=r"pip install 'edge-ee\[images\]'"):
        read_folder(folder / "test", raw, classes)


@pytest.mark.slow
def test_folder_build_then_device_folder_equals_samples_file(folder: Path, tmp_path: Path,
                                                             data_dir: Path) -> None:
    """`edge-ee build --data DIR --resize --crop` records the preprocessing; on the device
    `edge-ee-run --input DIR/test` gives exactly the results of the `edge-ee samples` file
    made from that folder, and the host's test accuracy."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    mean, std = ",".join(map(str, CIFAR_MEAN)), ",".join(map(str, CIFAR_STD))
    b = tmp_path / "b"
    r = subprocess.run([sys.executable, "-m", "edge_ee.cli", "-q", "build", "--model",
                        f"{USER}:resnet20", "--weights",
                        str(data_dir / "resnet-cifar10" / "resnet20.npz"), "--data", str(folder),
                        "--resize", "36", "--crop", "32,32", "--mean", mean, "--std", std,
                        "--cut", "layer1.2,layer2.2", "--exit", "lda:2", "--max-drop", "0.05",
                        "--out", str(b)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((b / "manifest.json").read_text())
    assert m["input"]["raw"]["resize"] == 36 and m["input"]["raw"]["crop"] == [32, 32]
    host_acc = m["calibration"]["test_point"]["accuracy"]
    s = tmp_path / "s.npz"
    r = subprocess.run([sys.executable, "-m", "edge_ee.cli", "samples", "--data", str(folder),
                        "--split", "test", "--bundle", str(b), "--out", str(s)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = {}
    for name, inp in (("folder", folder / "test"), ("npz", s)):
        run = subprocess.run([sys.executable, "-m", "device_runners.cli", str(b), "--input",
                              str(inp), "--out", str(tmp_path / f"{name}.json"), "--quiet",
                              "--idle-s", "0", "--profile", "none", "--power-source", "null"],
                             capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stderr
        out[name] = json.loads((tmp_path / f"{name}.json").read_text())["samples"]
    for k in ("exit", "prediction", "confidence", "label"):
        assert out["folder"][k] == out["npz"][k], k
    acc = np.mean(np.asarray(out["folder"]["prediction"]) == np.asarray(out["folder"]["label"]))
    assert len(out["folder"]["label"]) == 60 and abs(acc - host_acc) < 1e-9
    bad = _copy(folder / "test", tmp_path / "bad")
    (bad / "unicorn").mkdir()
    run = subprocess.run([sys.executable, "-m", "device_runners.cli", str(b), "--input", str(bad),
                          "--out", str(tmp_path / "x.json"), "--quiet", "--idle-s", "0",
                          "--profile", "none", "--power-source", "null"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2 and "unicorn" in run.stderr and "Traceback" not in run.stderr
    from PIL import Image
    d = _copy(folder, tmp_path / "f")  # an 11th class the model cannot predict: exit 2
    for split in ("train", "test"):
        (d / split / "zebra").mkdir()
        Image.new("RGB", (32, 32)).save(d / split / "zebra" / "0.jpg")
    r = subprocess.run([sys.executable, "-m", "edge_ee.cli", "-q", "build", "--model",
                        f"{USER}:resnet20", "--data", str(d), "--mean", mean, "--std", std,
                        "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "predicts 10 classes but the data has 11" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()
