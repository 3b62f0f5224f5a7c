"""The statistics pass under `torchrun --nproc-per-node 2` versus one process (issue 10).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_byom_torchrun.py --cifar-dir /tmp/cifar \
        --out bench-out/byom-torchrun [--images 5000] [--reps 2]

One pass of class statistics (E2CM sums/counts/norms and LDA 2x2-pool scatter, float64) of
ResNet-20 (`examples/user_resnet.py`, shipped weights, cut at `auto:4`) over a seeded
class-balanced `--images` subset of the extracted CIFAR-10 training folder, streamed from
JPEGs (`edge_ee.datasets.ImageFolder`). One process with 2 torch threads and with 1, and
two torchrun (gloo) processes with 1 thread each. Runs are interleaved; the statistics of
every run are compared with the first single-process run. Start-up (imports, process
group) is excluded: each worker times its own pass and reports the slowest rank.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def worker(root: str, out: str) -> None:
    """One pass (torchrun or plain); rank 0 writes the statistics and the pass's wall time."""
    from edge_ee import api, distributed
    from edge_ee.datasets import ImageFolder, Preprocess
    from edge_ee.exits import ExitSpec
    from edge_ee.exits.fit import fit_statistics
    dist = distributed.init_from_env("cpu")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    data = ImageFolder(root, Preprocess((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    model, _ = api.load_model(f"{ROOT / 'examples' / 'user_resnet.py'}:resnet20",
                              str(ROOT.parent / "shared" / "data" / "resnet-cifar10" / "resnet20.npz"))
    net = api.cut(model, "auto:4", (3, 32, 32), "resnet20")
    variant = [ExitSpec.parse("e2cm"), ExitSpec.parse("lda:2"), ExitSpec.parse("e2cm"),
               ExitSpec.parse("lda:2")]
    if dist:
        torch.distributed.barrier()
    t0 = time.perf_counter()
    (stats,) = fit_statistics(net, [variant], data, 256, progress=False)
    secs = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
    if dist:
        torch.distributed.all_reduce(secs, op=torch.distributed.ReduceOp.MAX)
    if distributed.rank() == 0:
        keys = ("sums", "counts", "sq_norm_sum")
        arrays = {f"{i}/{k}": getattr(s, k).numpy() for i, s in enumerate(stats)
                  for k in keys + (("scatter",) if s.scatter is not None else ())}
        np.savez(out, world=distributed.world_size(), seconds=float(secs), **arrays)
    distributed.shutdown()


def subset(cifar: Path, out: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    root = out / f"train-{n}"
    for cdir in sorted((cifar / "train").iterdir()):
        files = sorted(cdir.iterdir())
        (root / cdir.name).mkdir(parents=True, exist_ok=True)
        for i in np.sort(rng.choice(len(files), n // 10, replace=False)):
            if not (root / cdir.name / files[i].name).exists():
                (root / cdir.name / files[i].name).symlink_to(files[i].resolve())
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar-dir", type=Path)
    ap.add_argument("--out", type=Path, default=Path("bench-out/byom-torchrun"))
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--worker", nargs=2, metavar=("ROOT", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(*a.worker)
        return
    a.out.mkdir(parents=True, exist_ok=True)
    root = subset(a.cifar_dir, a.out, a.images)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    me = str(Path(__file__).resolve())
    one = [sys.executable, me, "--worker"]
    cmds = {"one_2threads": (one, "2"), "one_1thread": (one, "1"),
            "two": ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                     "--nproc-per-node", "2", me, "--worker"], "1")}
    runs: dict[str, list[float]] = {k: [] for k in cmds}
    ref, worst = None, {}
    load_before = os.getloadavg()
    for rep in range(a.reps):
        for kind, (cmd, threads) in cmds.items():
            out = a.out / f"{kind}-{rep}.npz"
            r = subprocess.run([*cmd, str(root), str(out)], capture_output=True, text=True,
                               env={**env, "OMP_NUM_THREADS": threads})
            if r.returncode:
                raise SystemExit(r.stderr[-3000:])
            with np.load(out) as z:
                runs[kind].append(float(z["seconds"]))
                arrays = {k: z[k] for k in z.files if "/" in k}
            if ref is None:
                ref = arrays
            for k, v in arrays.items():
                rel = float(np.abs(v - ref[k]).max() / max(np.abs(ref[k]).max(), 1e-300))
                worst[k] = max(worst.get(k, 0.0), rel)
            print(kind, rep, round(runs[kind][-1], 1), "s", flush=True)
    res = {"images": a.images, "seconds": runs,
           "ratio_two_over_one_median": {
               k: round(float(np.median(runs["two"]) / np.median(runs[k])), 3)
               for k in ("one_2threads", "one_1thread")},
           "max_relative_difference": max(worst.values()),
           "counts_total": int(sum(ref[k].sum() for k in ref if k.endswith("/counts")) // 4),
           "load_before": load_before, "load_after": os.getloadavg()}
    (a.out / "results.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
