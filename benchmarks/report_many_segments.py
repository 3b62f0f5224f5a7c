"""Issue-16 evidence: a real ResNet-56 exit-split bundle with every exit kept (26+ segments),
run by edge-ee-run and reported, to check that the report's charts stay readable.

Class means come from a class-balanced 500-per-class subset of the CIFAR-10 JPEG train
split (sizes kept small so it finishes in minutes on 2 cores); thresholds are the greedy
max-drop choice; every exit is exported (the ones the search dropped get threshold 1.0,
which never exits), so the bundle has one segment per residual block (27). Then the runner
measures it on 200 class-balanced test images and `edge-ee report` writes the report.

    python benchmarks/report_many_segments.py --out /tmp/many [--per-class 500]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from edge_ee.data import atomic_save_npz, load_cifar10_jpeg, shared_data_dir
from edge_ee.exitnet import from_resnet_cifar
from edge_ee.exits import ExitSpec
from edge_ee.models.resnet_cifar import load_resnet_cifar
from edge_ee.pipeline import FitConfig, calibration_record, evaluate_split, export, fit_exits


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for bundle, results, report")
    ap.add_argument("--per-class", type=int, default=500, help="train images per class")
    ap.add_argument("--test-per-class", type=int, default=20, help="test images per class run")
    ap.add_argument("--weights", type=Path,
                    default=shared_data_dir() / "resnet-cifar10" / "resnet56.npz")
    a = ap.parse_args()
    net = from_resnet_cifar(load_resnet_cifar(a.weights))
    train = load_cifar10_jpeg("train", per_class=a.per_class)
    test = load_cifar10_jpeg("test", per_class=a.test_per_class)
    cfg = FitConfig(exit_spec=ExitSpec.parse("e2cm:2"))
    fitted = fit_exits(net, train, cfg)
    for head in fitted.heads:  # keep every exit: a dropped one gets threshold 1.0 (never exits)
        if head is not None and not head.enabled:
            head.set_threshold(1.0)
    table = evaluate_split(net, fitted.heads, test, fitted.costs, cfg.batch_size)
    bundle = export(net, fitted.heads, a.out / "bundle", test, "resnet56-e2cm-all-exits",
                    calibration_record(fitted, cfg, table), None, overwrite=True)
    order = np.argsort(np.arange(len(test)) % a.test_per_class, kind="stable")  # interleave
    atomic_save_npz(a.out / "samples.npz", x=test.images[order], y=test.labels[order])
    run = [sys.executable, "-m", "device_runners.cli", str(bundle), "--input",
           str(a.out / "samples.npz"), "--out", str(a.out / "results.json"), "--quiet",
           "--profile", "generic-x86_64", "--idle-s", "1", "--min-duration-s", "3"]
    subprocess.run(run, check=True)
    subprocess.run([sys.executable, "-m", "edge_ee.cli", "report", str(a.out / "results.json"),
                    "--bundle", str(bundle), "--names", "resnet56-26seg", "--out",
                    str(a.out / "report")], check=True, stdout=subprocess.DEVNULL)
    print(f"report at {a.out / 'report'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
