"""A shipped CIFAR ResNet as a plain user `nn.Module` + CIFAR-10 as an image folder versus the
built-in path (`--model resnetN.npz --data cifar10-jpeg.zip`): same cost and accuracy?

    PYTHONPATH=. .venv/bin/python benchmarks/bench_byom_builtin.py --depth 20 \
        --train-per-class 1000 --out /tmp/byom-builtin

Both builds read the same JPEGs: a zip with a seeded class-balanced `--train-per-class`
training images per class and the whole test split (the built-in path's input), and the
same files extracted as `train/<class>/`, `test/<class>/` (the image-folder path). The
user model is `examples/user_resnet.py:resnetN` with the shipped weights, cut after every
residual block (the built-in ResNet's exit points); both use `--exit lda:2 --calib-data
test --calib-samples 3000 --max-drop X`. Everything is written under `--out` (outside the repository);
`results.json` holds both manifests' figures and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def make_data(out: Path, per_class: int) -> tuple[Path, Path]:
    zp, folder = out / "cifar-subset.zip", out / "cifar-subset"
    if zp.is_file():
        return zp, folder
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(DATA / "cifar10-jpeg.zip") as src, \
            zipfile.ZipFile(zp.with_suffix(".tmp"), "w", zipfile.ZIP_STORED) as dst:
        names = sorted(n for n in src.namelist() if n.endswith(".jpg"))
        by_class: dict[tuple[str, str], list[str]] = {}
        for n in names:
            split, cls, _ = n.split("/")
            by_class.setdefault((split, cls), []).append(n)
        for (split, _), files in sorted(by_class.items()):
            if split == "train":
                files = [files[i] for i in np.sort(rng.choice(len(files), per_class, False))]
            for n in files:
                blob = src.read(n)
                dst.writestr(n, blob)
                (folder / n).parent.mkdir(parents=True, exist_ok=True)
                (folder / n).write_bytes(blob)
    zp.with_suffix(".tmp").rename(zp)
    return zp, folder


def build(args: list[str], out: Path, env: dict, max_drop: float) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "edge_ee.cli", "-q", "build", *args, "--exit",
                        "lda:2", "--calib-data", "test", "--calib-samples", "3000", "--max-drop",
                        str(max_drop), "--out",
                        str(out), "--overwrite"], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    m = json.loads((out / "manifest.json").read_text())
    c = m["calibration"]
    return {"test_accuracy": c["test_point"]["accuracy"], "test_cost": c["test_point"]["cost_fraction"],
            "full_test_accuracy": c["full_accuracy"]["test"], "full_flops": m["cost"]["full_flops"],
            "calib_accuracy": c["point"]["accuracy"], "calib_cost": c["point"]["cost_fraction"],
            "exits_kept": [s["exit"]["point"] for s in m["segments"] if s.get("exit")],
            "test_n": c["test_split"]["n"], "wall_s": round(time.perf_counter() - t0, 1),
            "load": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=20, choices=(20, 56))
    ap.add_argument("--train-per-class", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/byom-builtin"))
    ap.add_argument("--max-drop", type=float, default=0.01)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    zp, folder = make_data(a.out, a.train_per_class)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGE_EE_CACHE": str(a.out / "cache")}
    weights = DATA / "resnet-cifar10" / f"resnet{a.depth}.npz"
    n = (a.depth - 2) // 6
    cuts = ",".join(f"layer{s}.{i}" for s in (1, 2, 3) for i in range(n))
    from edge_ee.data import CIFAR_MEAN, CIFAR_STD
    res = {"depth": a.depth, "train_per_class": a.train_per_class, "max_drop": a.max_drop,
           "load_before": os.getloadavg()}
    res["builtin"] = build(["--model", str(weights), "--data", str(zp)], a.out / "builtin", env,
                           a.max_drop)
    print(res["builtin"], flush=True)
    res["user_folder"] = build(["--model", f"{ROOT / 'examples' / 'user_resnet.py'}:resnet{a.depth}",
                                "--weights", str(weights), "--data", str(folder), "--cut", cuts,
                                "--mean", ",".join(map(str, CIFAR_MEAN)),
                                "--std", ",".join(map(str, CIFAR_STD))], a.out / "user", env, a.max_drop)
    print(res["user_folder"], flush=True)
    res["difference_points"] = {k: round(100 * (res["user_folder"][k] - res["builtin"][k]), 4)
                                for k in ("test_accuracy", "test_cost", "full_test_accuracy")}
    (a.out / "results.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
