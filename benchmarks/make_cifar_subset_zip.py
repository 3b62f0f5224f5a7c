"""A CIFAR-10 JPEG zip with `--per-class` training images per class and the whole test split.

    PYTHONPATH=. .venv/bin/python benchmarks/make_cifar_subset_zip.py \
        [--src ../shared/data/cifar10-jpeg.zip] [--per-class 500] [--seed 0] \
        [--out bench-out/cifar10-train5000.zip]

The JPEG bytes are copied, not re-encoded; training files are drawn at random (seeded) per
class, so the statistics pass of `edge-ee build --data THIS.zip` sees a class-balanced
sample (the repeated `--latency-aware` CLI builds of docs/overhead-bound.md use it to fit
on 5000 images instead of 50000 on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, default=Path("../shared/data/cifar10-jpeg.zip"),
                   help="the CIFAR-10 JPEG zip (default ../shared/data/cifar10-jpeg.zip)")
    p.add_argument("--per-class", type=int, default=500,
                   help="training images per class (default 500)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", type=Path, default=Path("bench-out/cifar10-train5000.zip"),
                   help="zip to write (default bench-out/cifar10-train5000.zip)")
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(".tmp")
    with zipfile.ZipFile(a.src) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
        names = sorted(n for n in src.namelist() if n.endswith(".jpg"))
        by_class: dict[str, list[str]] = {}
        for n in names:
            if n.startswith("train/"):
                by_class.setdefault(n.split("/")[1], []).append(n)
            else:
                dst.writestr(n, src.read(n))
        for files in by_class.values():
            for i in np.sort(rng.choice(len(files), a.per_class, replace=False)):
                dst.writestr(files[i], src.read(files[i]))
    tmp.replace(a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
