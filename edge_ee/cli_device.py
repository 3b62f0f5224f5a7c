"""Device-facing host subcommands: `edge-ee pack-runner` and `edge-ee samples`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    p = sub.add_parser("pack-runner", help="build a single-file edge-ee-run.pyz for devices")
    p.add_argument("--out", type=Path, default=Path("edge-ee-run.pyz"))
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
    from edge_ee.pack import pack_runner
    path = pack_runner(a.out)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB); on the device: "
          f"python3 {path.name} BUNDLE --input samples.npz --out results.json")
    return 0
