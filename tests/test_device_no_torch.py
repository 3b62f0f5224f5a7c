"""The device side never imports torch: every module imports, and a run works, with torch blocked.

The one executor, self-check and recorders serve every task; a segmentation run with
torch blocked is in test_segmentation_bundle.py (it needs a segmentation bundle).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BLOCK = r"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked on the device side")
sys.meta_path.insert(0, Block())
import device_runners
mods = [m.name for m in pkgutil.walk_packages(device_runners.__path__, "device_runners.")]
for m in mods:
    importlib.import_module(m)
assert "torch" not in sys.modules
assert {"device_runners.executor", "device_runners.golden", "device_runners.recorders",
        "device_runners.backends.onnxruntime", "device_runners.backends.tflite"} <= set(mods), mods
print("imported", len(mods))
if len(sys.argv) > 1:
    from device_runners import cli
    sys.exit(cli.main(sys.argv[1:]))
"""


def test_every_device_module_imports_without_torch() -> None:
    r = subprocess.run([sys.executable, "-c", BLOCK], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[-1]) >= 5


@pytest.mark.shared_data
def test_runner_runs_without_torch(tmp_path: Path, fashion_bundle: Path) -> None:
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-c", BLOCK, str(fashion_bundle), "--out", str(out),
                        "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.is_file()
