"""`edge-ee pack-runner`: a single-file runner for devices (a Python zipapp).

The archive holds `device_runners` and `hardware_profiles` (code and YAML) and runs as
`python3 edge-ee-run.pyz BUNDLE …` on a device that has only numpy, pyyaml and one
runtime installed. Written through a temporary file and a rename.
"""

from __future__ import annotations

import shutil
import tempfile
import zipapp
from pathlib import Path

import device_runners
import hardware_profiles
from device_runners.files import atomic_path

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
    print(f"edge-ee-run: error: missing {', '.join(missing)}; install with:\\n  {INSTALL}",
          file=sys.stderr)
    sys.exit(2)

from device_runners.cli import main

sys.exit(main())
'''


def pack_runner(out: str | Path) -> Path:
    """Build the zipapp at `out`; returns its path."""
    dest = Path(out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "app"
        root.mkdir()
        for pkg in (device_runners, hardware_profiles):
            src = Path(pkg.__file__).parent
            shutil.copytree(src, root / src.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (root / "__main__.py").write_text(MAIN)
        with atomic_path(dest, suffix=".pyz.tmp", executable=True) as part:
            zipapp.create_archive(root, part, interpreter="/usr/bin/env python3", compressed=True)
    return dest
