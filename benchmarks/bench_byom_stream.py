"""Streaming a user's image folder: memory and time of the statistics pass (issue 10 evidence).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_byom_stream.py --cifar-dir /tmp/cifar \
        --out bench-out/byom-stream [--skip-rss] [--skip-ratio]

`--cifar-dir`: the CIFAR-10 JPEG zip extracted outside the repository (see
`bench_byom_archs.py`). Two measurements:

1. **Peak RSS of `edge-ee build`** (`/usr/bin/time -f %M`, the whole process) on 10k versus
   50k training images, each run in a fresh process, with the same 1000-image class-balanced
   test folder; the model is `tiny` below (a 2-conv CNN, random weights: the data path is
   measured, not the network). `--npz-contrast`: also the same builds from an in-memory
   `.npz`.
2. **Wall time per image of the statistics pass versus a plain forward pass** over the same
   loader (`edge_ee.datasets.stream` over an `ImageFolder` of a class-balanced
   `--ratio-images` training images, decoding included in both): ResNet-20 (`examples/user_resnet.py`, shipped
   weights) cut at `auto:4`, E2CM and LDA (2x2 pool) exits at all four points; the three
   passes interleaved, `--reps` rounds, medians.
Writes `results.json` with the load averages (the machine is shared: only ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = "0.4914,0.4822,0.4465", "0.247,0.2435,0.2616"


def tiny() -> nn.Module:
    """A 2-conv CNN (about 1.4 MFLOPs), random weights: a factory for `--model`."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 10))


def folders(cifar: Path, out: Path, n_train: int, n_test: int = 1000, seed: int = 0) -> Path:
    """out/train (n_train class-balanced, seeded) and out/test (n_test), symlinked JPEGs."""
    rng = np.random.default_rng(seed)
    root = out / f"folder-{n_train}"
    for split, n in (("train", n_train), ("test", n_test)):
        for cdir in sorted((cifar / split).iterdir()):
            files = sorted(cdir.iterdir())
            pick = np.sort(rng.choice(len(files), n // 10, replace=False))
            dst = root / split / cdir.name
            dst.mkdir(parents=True, exist_ok=True)
            for i in pick:
                if not (dst / files[i].name).exists():
                    (dst / files[i].name).symlink_to(files[i].resolve())
    return root


def as_npz(root: Path) -> Path:
    from edge_ee.datasets import ImageFolder, Preprocess
    pre = Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    arrays = {}
    for split in ("train", "test"):
        f = ImageFolder(root / split, pre)
        arrays[f"x_{split}"] = np.concatenate(list(f.raw_chunks()))
        arrays[f"y_{split}"] = f.labels
    path = root.with_suffix(".npz")
    np.savez(path, **arrays)
    return path


def peak_rss_build(data: Path, out: Path) -> dict:
    rss = out.with_suffix(".rss")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss), sys.executable, "-m",
                        "edge_ee.cli", "-q", "build", "--model", f"{Path(__file__).resolve()}:tiny",
                        "--data", str(data), "--cut", "1,4", "--mean", MEAN, "--std", STD,
                        "--exit", "lda:2", "--out", str(out), "--overwrite"],
                       capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return {"peak_rss_mib": round(int(rss.read_text().split()[-1]) / 1024, 1),
            "wall_s": round(time.perf_counter() - t0, 1), "load": os.getloadavg()}


def rss(cifar: Path, out: Path, npz: bool) -> dict:
    res = {}
    kinds = ("folder", "npz") if npz else ("folder",)
    for n in (10_000, 50_000):
        root = folders(cifar, out, n)
        res[f"folder_{n}"] = peak_rss_build(root, out / f"b-folder-{n}")
        print(n, res[f"folder_{n}"], flush=True)
        if npz:
            res[f"npz_{n}"] = peak_rss_build(as_npz(root), out / f"b-npz-{n}")
            print(n, res[f"npz_{n}"], flush=True)
    for kind in kinds:
        res[f"{kind}_ratio_50k_over_10k"] = round(
            res[f"{kind}_50000"]["peak_rss_mib"] / res[f"{kind}_10000"]["peak_rss_mib"], 3)
    return res


def ratio(cifar: Path, out: Path, reps: int, images: int) -> dict:
    from edge_ee import api
    from edge_ee.datasets import ImageFolder, Preprocess, stream
    from edge_ee.exits import ExitSpec
    from edge_ee.exits.fit import fit_statistics
    torch.set_num_threads(2)
    root = folders(cifar, out, images, 10)
    data = ImageFolder(root / "train", Preprocess((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    model, _ = api.load_model(f"{ROOT / 'examples' / 'user_resnet.py'}:resnet20",
                              str(ROOT.parent / "shared" / "data" / "resnet-cifar10" / "resnet20.npz"))
    net = api.cut(model, "auto:4", (3, 32, 32), "resnet20")

    @torch.no_grad()
    def forward() -> None:
        for x, _ in stream(data, 256):
            net(x)

    def stats(kind: str) -> None:
        fit_statistics(net, [[ExitSpec.parse(kind)] * net.num_exits], data, 256, progress=False)

    passes = {"forward": forward, "stats_e2cm": lambda: stats("e2cm"),
              "stats_lda2": lambda: stats("lda:2")}
    times: dict[str, list[float]] = {k: [] for k in passes}
    load_before = os.getloadavg()
    for _ in range(reps):
        for k, fn in passes.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) / len(data))
        print({k: round(v[-1] * 1e3, 3) for k, v in times.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"images": len(data), "reps": reps, "cuts": net.exit_names,
            "ms_per_image_median": {k: round(v * 1e3, 3) for k, v in med.items()},
            "ratio_stats_e2cm_over_forward": round(med["stats_e2cm"] / med["forward"], 3),
            "ratio_stats_lda2_over_forward": round(med["stats_lda2"] / med["forward"], 3),
            "per_round_ratios_e2cm": [round(a / b, 3) for a, b in
                                      zip(times["stats_e2cm"], times["forward"], strict=True)],
            "load_before": load_before, "load_after": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("bench-out/byom-stream"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ratio-images", type=int, default=2000)
    ap.add_argument("--npz-contrast", action="store_true",
                    help="also the in-memory .npz builds of the same images")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--skip-ratio", action="store_true")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "results.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    if not a.skip_ratio:
        res["stats_vs_forward"] = ratio(a.cifar_dir, a.out, a.reps, a.ratio_images)
        path.write_text(json.dumps(res, indent=1))
    if not a.skip_rss:
        res["peak_rss"] = rss(a.cifar_dir, a.out, a.npz_contrast)
        path.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
