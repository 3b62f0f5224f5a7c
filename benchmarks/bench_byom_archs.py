"""Two architectures edge-ee does not ship, brought as user files (issue 10 evidence).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_byom_archs.py --cifar-dir /tmp/cifar \
        --out bench-out/byom --minutes 4 --train-per-class 1000 \
        --exit-train-per-class 300 --test-per-class 100 --calib-samples 500

`--cifar-dir` is the CIFAR-10 JPEG zip extracted (`train/<class>/*.jpg`, `test/<class>/*.jpg`;
e.g. `python -c "import zipfile; zipfile.ZipFile('../shared/data/cifar10-jpeg.zip')
.extractall('/tmp/cifar')"` — outside the repository). For each of
`examples/user_mobilenetv2.py:mobilenetv2` and `examples/user_resnet18.py:resnet18`:

1. train it from scratch for `--minutes` of wall time (the CPU seconds it got are recorded:
   the machine is shared) on a seeded class-balanced subset of
   `--train-per-class` images per class (Adam, flips and 4-pixel shifts), on this CPU;
2. `edge-ee inspect --auto 4` → the cut points;
3. `edge-ee build` from the CLI on an image folder (symlinks: `--exit-train-per-class`
   training and `--test-per-class` test images per class, seeded) with E2CM exits,
   thresholds chosen on `--calib-samples` class-balanced test images (`--calib-data test`),
   evaluated on the rest of the test folder;
4. the same through the Python API (`edge_ee.api`) with LDA exits on a 2x2 pool;
5. `edge-ee-run BUNDLE --input FOLDER/test` (the device decodes the JPEGs itself; the
   whole test folder, calibration images included).
Writes `results.json` in `--out`; the load average is recorded. Figures:
`docs/byom-evidence.md`.
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
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
ARCHS = {"mobilenetv2": ROOT / "examples" / "user_mobilenetv2.py",
         "resnet18": ROOT / "examples" / "user_resnet18.py"}
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def subset_folder(cifar: Path, out: Path, train_per_class: int, test_per_class: int | None,
                  seed: int = 0) -> Path:
    """out/train/<class>/ and out/test/<class>/: seeded random `*_per_class` images of each
    class (all test images when None), as symlinks to the extracted JPEGs."""
    rng = np.random.default_rng(seed)
    for split, per in (("train", train_per_class), ("test", test_per_class)):
        for cdir in sorted((cifar / split).iterdir()):
            files = sorted(cdir.iterdir())
            if per is not None:
                files = [files[i] for i in np.sort(rng.choice(len(files), per, False))]
            dst = out / split / cdir.name
            dst.mkdir(parents=True, exist_ok=True)
            for f in files:
                if not (dst / f.name).exists():
                    (dst / f.name).symlink_to(f.resolve())
    return out


def train(arch: str, folder: Path, minutes: float, out: Path) -> dict:
    """Train from scratch for `minutes` (wall); state_dict to out/<arch>.pt."""
    from edge_ee.datasets import ImageFolder, Preprocess
    from edge_ee.models.user import load_user_model
    torch.manual_seed(0)
    model, _ = load_user_model(f"{ARCHS[arch]}:{arch}")
    data = ImageFolder(folder / "train", Preprocess(MEAN, STD))
    x, y = torch.from_numpy(data.normalised()), torch.from_numpy(data.labels)
    opt = torch.optim.Adam(model.parameters(), 2e-3, weight_decay=5e-4)
    model.train()
    t0, c0, steps, epochs = time.perf_counter(), time.process_time(), 0, 0
    deadline = t0 + 60 * minutes
    while time.perf_counter() < deadline:
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            idx = perm[i : i + 128]
            xb = x[idx]
            flip = torch.rand(len(xb)) < 0.5
            xb[flip] = xb[flip].flip(3)
            dx, dy = np.random.randint(-4, 5, 2)
            xb = torch.roll(F.pad(xb, (4, 4, 4, 4)), (int(dx), int(dy)), (2, 3))[:, :, 4:36, 4:36]
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() >= deadline:
                break
        epochs += 1
    model.eval()
    torch.save(model.state_dict(), out / f"{arch}.pt")
    return {"train_seconds": round(time.perf_counter() - t0, 1),
            "train_cpu_seconds": round(time.process_time() - c0, 1), "steps": steps,
            "epochs_started": epochs, "train_images": len(x), "final_loss": float(loss.detach())}


def cli(*args: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=ENV)
    if r.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr, time.perf_counter() - t0


def bundle_figures(bundle: Path) -> dict:
    m = json.loads((bundle / "manifest.json").read_text())
    c = m["calibration"]
    return {"test_accuracy": c["test_point"]["accuracy"], "test_cost": c["test_point"]["cost_fraction"],
            "full_test_accuracy": c["full_accuracy"]["test"], "calib_cost": c["point"]["cost_fraction"],
            "test_n": c.get("test_split", {}).get("n"), "exits": [s["name"] for s in m["segments"]],
            "full_flops": m["cost"]["full_flops"],
            "flops_all_segments": m["cost"]["total_flops_all_segments"]}


def device_run(bundle: Path, folder: Path, out: Path) -> dict:
    _, secs = cli("device_runners.cli", str(bundle), "--input", str(folder / "test"), "--out",
                  str(out), "--quiet", "--idle-s", "0", "--profile", "none",
                  "--power-source", "null")
    s = json.loads(out.read_text())["samples"]
    pred, lab = np.asarray(s["prediction"]), np.asarray(s["label"])
    return {"device_accuracy_whole_test_folder": float((pred == lab).mean()), "n": len(lab),
            "exit_histogram": np.bincount(s["exit"]).tolist(), "wall_s": round(secs, 1)}


def api_build(arch: str, weights: Path, folder: Path, out: Path, n_calib: int) -> dict:
    from edge_ee import api
    from edge_ee.calib_source import balanced_subset, without
    from edge_ee.datasets import ImageFolder, Preprocess
    model, _ = api.load_model(f"{ARCHS[arch]}:{arch}", str(weights))
    net = api.cut(model, "auto:4", (3, 32, 32), f"user-{arch}")
    pre = Preprocess(MEAN, STD)
    train, test = ImageFolder(folder / "train", pre), ImageFolder(folder / "test", pre)
    calib, _ = balanced_subset(test, n_calib, 0)
    held, _ = without(test, calib)
    t0 = time.perf_counter()
    fitted = api.fit(net, train, api.FitConfig(exit_spec=api.ExitSpec.parse("lda:2")),
                     calib_data=calib, progress=False)
    point = api.evaluate(net, fitted, held)
    path = api.export_bundle(net, fitted, out, held, f"user-{arch}-lda", overwrite=True)
    return {"test_accuracy": point.accuracy, "test_cost": point.cost_fraction,
            "exits": net.exit_names, "seconds": round(time.perf_counter() - t0, 1),
            "bundle": str(path), "test_n": len(held)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("bench-out/byom"))
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--train-per-class", type=int, default=1000)
    ap.add_argument("--exit-train-per-class", type=int, default=1000,
                    help="training images per class for the exits' statistics")
    ap.add_argument("--test-per-class", type=int, default=None, help="default: all 1000")
    ap.add_argument("--calib-samples", type=int, default=3000)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS))
    a = ap.parse_args()
    torch.set_num_threads(2)
    a.out.mkdir(parents=True, exist_ok=True)
    train_folder = subset_folder(a.cifar_dir, a.out / "data", a.train_per_class, 1)
    folder = subset_folder(a.cifar_dir, a.out / "exits-data", a.exit_train_per_class,
                           a.test_per_class, seed=1)
    res_path = a.out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.is_file() else {}
    mean, std = ",".join(map(str, MEAN)), ",".join(map(str, STD))
    for arch in a.archs:
        r: dict = {"load_before": os.getloadavg()}
        weights = a.out / f"{arch}.pt"
        record = a.out / f"{arch}.train.json"  # trained weights are reused on a rerun
        if not (weights.is_file() and record.is_file()):
            record.write_text(json.dumps(train(arch, train_folder, a.minutes, a.out)))
        r["train"] = json.loads(record.read_text())
        text, _ = cli("edge_ee.cli", "inspect", "--model", f"{ARCHS[arch]}:{arch}",
                      "--input-shape", "3,32,32", "--auto", "4")
        cuts = next(ln for ln in text.splitlines() if ln.startswith("--cut ")).split()[-1]
        r["inspect_cut"] = cuts
        r["valid_cut_points"] = next(ln for ln in text.splitlines() if "valid cut points" in ln)
        b = a.out / f"{arch}-e2cm-cli"
        _, secs = cli("edge_ee.cli", "-q", "build", "--model", f"{ARCHS[arch]}:{arch}",
                      "--weights", str(weights), "--data", str(folder), "--cut", cuts,
                      "--mean", mean, "--std", std, "--exit", "e2cm", "--calib-data", "test",
                      "--calib-samples", str(a.calib_samples), "--out", str(b), "--overwrite")
        r["cli_e2cm"] = {**bundle_figures(b), "build_s": round(secs, 1),
                         **device_run(b, folder, a.out / f"{arch}-cli-run.json")}
        r["api_lda"] = api_build(arch, weights, folder, a.out / f"{arch}-lda-api",
                                 a.calib_samples)
        r["api_lda"].update(device_run(Path(r["api_lda"]["bundle"]), folder,
                                       a.out / f"{arch}-api-run.json"))
        r["api_lda"]["full_flops"] = bundle_figures(Path(r["api_lda"]["bundle"]))["full_flops"]
        r["load_after"] = os.getloadavg()
        results[arch] = r
        res_path.write_text(json.dumps(results, indent=1))
        print(json.dumps({arch: r}, indent=1), flush=True)


if __name__ == "__main__":
    main()
