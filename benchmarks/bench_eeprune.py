"""EEPrune evidence: EEPrune vs random, EL2N and forgetting, D_p check, exit location, cost.

Sized for two shared CPU cores (one torch thread per process; run the two data sets as
two processes):

  nice -n 10 python benchmarks/bench_eeprune.py --dataset fashion-mnist   # full 60k / 10k
  nice -n 10 python benchmarks/bench_eeprune.py --dataset cifar10         # 1,000 per class
  nice -n 10 python benchmarks/bench_eeprune.py --dataset fashion-mnist-long  # side study
  nice -n 10 python benchmarks/bench_eeprune.py --dataset fashion-mnist-onecycle  # after the
  nice -n 10 python benchmarks/bench_eeprune.py --dataset cifar10-onecycle  # two main runs

Models (edge_ee/dataprune/models.py), trained from scratch with SGD + one-cycle, no
augmentation: Fashion-MNIST (full 60k / 10k) an `mlp` for 3 epochs; CIFAR-10 the
`compact-cnn` for 5 epochs on a class-balanced random 10k of the 50k training images
(the full 10k test split). Sized for a machine whose two cores were shared by ~7
processes. EEPrune trains its early-exit network for 1/8 of a full run (0.375 / 0.625
epoch; constant lr in the main settings, one-cycle in `*-onecycle`); EL2N 1 epoch × 2
seeds; forgetting a full run. Ratios 30/50/70 %, seeds
0, 1, 2; D_p at 50 %; exit location at 30 %. Output (tables, figures, report.md/html,
keep files, runs.jsonl) under bench-out/eeprune-<dataset>/; a rerun resumes from
runs.jsonl.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from edge_ee.dataprune.config import PruneDataConfig
from edge_ee.dataprune.harness import run_evaluation
from edge_ee.dataprune.report import write_report

PUBLISHED = {
    "CIFAR-10, 50 % pruned (thesis)": "trained on D_p 85.63 vs kept 88.30",
    "CIFAR-100, MobileNetV3-L, 30 % pruned, exit location (thesis)":
        "middle 72.32 / before 67.66 / after 67.01",
    "scoring energy (thesis)": "EEPrune ≈ 0.1–0.3 kWh vs 1–7 kWh for EL2N / forgetting",
}

SETTINGS = {
    "fashion-mnist": dict(dataset="fashion-mnist", model="mlp", score_schedule="constant",
                          train_epochs=3.0, score_epochs=0.375, el2n_epochs=1.0),
    "cifar10": dict(dataset="cifar10", model="compact-cnn", score_schedule="constant",
                    train_per_class=1000, train_epochs=5.0, score_epochs=0.625,
                    el2n_epochs=1.0),
    # side study: does keeping hard samples pay off once training is long enough?
    # 2,000 per class, 12 epochs per run; random vs EEPrune (both readings) at 50 %
    "fashion-mnist-long": dict(dataset="fashion-mnist", model="mlp", score_schedule="constant",
                               train_per_class=2000, train_epochs=12.0, score_epochs=1.5,
                               scorers=("random", "eeprune"), ratios=(0.5,),
                               dp_check=False, exit_ablation=False),
}
# side study: EEPrune with a longer scoring run (1 and 2 epochs = 1/3 and 2/3 of a full run)
# on the main Fashion-MNIST setting; the full-data and random runs are identical to the
# main run's and are reused from its runs.jsonl (same keys, same seeds, same settings)
for _ep in (1, 2):
    SETTINGS[f"fashion-mnist-score{_ep}"] = dict(
        SETTINGS["fashion-mnist"], score_epochs=float(_ep), scorers=("random", "eeprune"),
        ratios=(0.5,), dp_check=False, exit_ablation=False)
REUSE = {f"fashion-mnist-score{_ep}": "fashion-mnist" for _ep in (1, 2)}
# EEPrune's early-exit network on the one-cycle schedule (the main runs used constant lr)
for _d in ("fashion-mnist", "cifar10"):
    SETTINGS[f"{_d}-onecycle"] = dict(SETTINGS[_d], score_schedule="one-cycle",
                                      scorers=("random", "eeprune"))
    REUSE[f"{_d}-onecycle"] = _d


def _reuse_runs(src: Path, dst: Path) -> None:
    """Seed dst/runs.jsonl with src's full-data and random rows (same settings, same keys)."""
    if (dst / "runs.jsonl").exists() or not (src / "runs.jsonl").is_file():
        return
    dst.mkdir(parents=True, exist_ok=True)
    rows = [ln for ln in (src / "runs.jsonl").read_text().splitlines()
            if ln.strip() and json.loads(ln)["key"].startswith(("full/", "random/"))]
    (dst / "runs.jsonl").write_text("\n".join(rows) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(SETTINGS), required=True)
    p.add_argument("--out", default=None)
    p.add_argument("--seeds", default="0,1,2")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = PruneDataConfig(evaluate=True,
                          seeds=tuple(int(s) for s in a.seeds.split(",")), progress=False,
                          out=a.out or f"bench-out/eeprune-{a.dataset}", threads=1,
                          **SETTINGS[a.dataset])
    if a.dataset in REUSE:
        _reuse_runs(Path(f"bench-out/eeprune-{REUSE[a.dataset]}"), Path(cfg.out))
    t0 = time.perf_counter()
    ev = run_evaluation(cfg)
    path = write_report(ev, cfg.out, PUBLISHED)
    print(path.read_text())
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
