"""Device-facing host subcommands: `edge-ee pack-runner` and `edge-ee samples`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from device_runners.argtypes import DefaultsHelpFormatter
from edge_ee.pack import PLATFORMS


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    p = sub.add_parser("pack-runner", help="build a single-file edge-ee-run.pyz for devices",
                       description="Plain (default): the runner's code only; the device needs "
                       "numpy, pyyaml and onnxruntime. With --platform: those vendored for that "
                       "platform (shiv); the device needs only Python 3. It extracts its "
                       "native libraries once to ~/.shiv (--extract-root, or SHIV_ROOT at run "
                       "time). Offline: fill a folder on a connected machine with the `pip download` "
                       "this command prints when the package index cannot be reached, and pass "
                       "--wheels DIR.",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("edge-ee-run.pyz"), help=".pyz file to write")
    p.add_argument("--platform", choices=sorted(PLATFORMS), default=None,
                   help="vendor numpy, pyyaml and onnxruntime for this platform (default: "
                        "none, the plain .pyz)")
    p.add_argument("--python", default="3.11",
                   help="with --platform: the device's Python version, MAJOR.MINOR")
    p.add_argument("--glibc", default="2.31",
                   help="with --platform: the device's glibc (ldd --version); wheels needing a "
                        "newer one are not used (Raspberry Pi OS 12: 2.36, Ubuntu 20.04: 2.31)")
    p.add_argument("--wheels", type=Path, default=None,
                   help="with --platform: take the wheels from this folder, no package index "
                        "(default: pip download them now)")
    p.add_argument("--constraints", type=Path, default=None,
                   help="with --platform: pin versions with this pip constraints file (default: "
                        "the repository's constraints.txt when there is one)")
    p.add_argument("--extract-root", default=None,
                   help="with --platform: folder the device extracts the archive's libraries "
                        "to, or $VAR (default: ~/.shiv; SHIV_ROOT overrides it at run time)")
    s = sub.add_parser("samples", help="write the runner's --input .npz from your data "
                       "(seeded, class-balanced subset)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--data", required=True, help="Fashion-MNIST IDX folder, CIFAR-10 JPEG "
                   ".zip, .npz with x/y (or x_<split>/y_<split>, e.g. the CamVid file), or an "
                   "image folder DIR/<split>/<class>/*.jpg or DIR/<class>/*.jpg")
    s.add_argument("--out", default="edge-ee-out/samples.npz", help=".npz to write")
    s.add_argument("--split", default="test", help="which split of the data")
    s.add_argument("--count", type=int, default=None, help="how many samples (default: all)")
    s.add_argument("--balanced", action=argparse.BooleanOptionalAction, default=True,
                   help="the same number of samples of every class")
    s.add_argument("--seed", type=int, default=0, help="random seed of the subset")
    s.add_argument("--bundle", default=None, help="check the images against this bundle's "
                   "raw input spec (image folders: decode with its resize/crop and classes)")
    return {"pack-runner": cmd_pack_runner, "samples": cmd_samples}


def cmd_samples(a: argparse.Namespace) -> int:
    from edge_ee.samples import SamplesConfig, make_samples
    cfg = SamplesConfig(data=a.data, out=a.out, split=a.split, count=a.count,
                        balanced=a.balanced, seed=a.seed, bundle=a.bundle)
    path = make_samples(cfg)
    with np.load(path) as z:
        n, labels = len(z["x"]), "y" in z.files
    print(f"wrote {path}: {n} samples{' with labels' if labels else ''}; run it with "
          f"edge-ee-run BUNDLE --input {path}")
    return 0


def cmd_pack_runner(a: argparse.Namespace) -> int:
    from edge_ee.pack import PackConfig, pack_runner
    cfg = PackConfig(out=a.out, platform=a.platform, python=a.python, glibc=a.glibc,
                     wheels=a.wheels, constraints=a.constraints, extract_root=a.extract_root)
    path = pack_runner(cfg)
    needs = (f"only Python {a.python}; the first run extracts its libraries to "
             f"{a.extract_root or '~/.shiv'} (SHIV_ROOT overrides)" if a.platform else
             "numpy, pyyaml and onnxruntime installed")
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB); on the device ({needs}): "
          f"python3 {path.name} BUNDLE --input samples.npz --out results.json")
    return 0
