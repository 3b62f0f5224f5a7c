"""EEPrune and the data-pruning baselines on real Fashion-MNIST subsets; keep files; the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_ee.errors import ConfigError, DataError
from tests.helpers_cli import run_cli
from tests.helpers_data import SHARED_DATA, needs_fashion

pytestmark = [pytest.mark.shared_data, needs_fashion]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def full_train():
    from edge_ee.data import load_fashion_mnist
    return load_fashion_mnist("train", SHARED_DATA / "fashion-mnist")


@pytest.fixture(scope="module")
def small(full_train):
    """A class-balanced random 80 per class (800 samples), the CLI's subset recipe."""
    from edge_ee.dataprune.harness import balanced_subset
    return balanced_subset(full_train, 80, 1234)


@pytest.fixture(scope="module")
def ee_scores(small):
    from edge_ee.dataprune.scorers import ScoreBudget, get_scorer
    budget = ScoreBudget(epochs=2.0, exit="middle", batch_size=64, lr=0.05)
    return get_scorer("eeprune").score(small, "mlp", budget, progress=False), budget


def test_keep_indices_exact_ratio_and_random_ties() -> None:
    from edge_ee.dataprune.scorers import keep_indices
    scores = np.r_[np.zeros(500), np.arange(500.0)]
    kept = keep_indices(scores, 0.3, seed=0)
    assert len(kept) == 700 and np.all(np.diff(kept) > 0)
    assert np.all(scores[kept] >= 0) and np.isin(np.arange(600, 1000), kept).all()
    # 300 discarded among the 500 tied zeros, not the first 300 indices
    assert not np.array_equal(np.setdiff1d(np.arange(1000), kept), np.arange(300))
    assert len(keep_indices(scores, 0.0)) == 1000
    # class-balanced reading: every class loses the same fraction, total still exact
    labels = np.arange(1000) % 3
    kb = keep_indices(scores, 0.3, seed=0, labels=labels)
    assert len(kb) == 700
    lost = [1 - np.isin(np.flatnonzero(labels == k), kb).mean() for k in range(3)]
    assert max(lost) - min(lost) < 0.01
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"outside \[0, 1\)"):
            keep_indices(scores, bad)


def test_eeprune_discards_confident_correct_samples_first(small, ee_scores) -> None:
    from edge_ee.dataprune.scorers import to_keep_file
    res, budget = ee_scores
    m = res.meta
    assert m["exit_index"] == 1 and m["train_steps"] == 25  # 2 epochs × 800 / 64
    assert m["early_train_accuracy"] > 0.6 and m["final_train_accuracy"] > 0.6
    cand = res.scores < 1.0
    assert cand.sum() == m["candidates"] > 0.4 * len(small)
    ratio = round(0.8 * m["candidates"] / len(small), 2)
    kf = to_keep_file("eeprune", small, res, ratio, "mlp", budget)
    disc = kf.discarded
    assert len(disc) == round(ratio * len(small))
    # every discarded sample meets the two correctness conditions, and is at least as
    # confident at the early exit as every kept sample that meets them
    assert cand[disc].all()
    conf = 1.0 - res.scores
    kept_cand = kf.kept[cand[kf.kept]]
    assert conf[disc].min() >= conf[kept_cand].max() - 1e-12
    assert kf.provenance["meta"]["implied_threshold"] == pytest.approx(conf[disc].min())
    assert kf.provenance["meta"]["discarded_not_meeting_conditions"] == 0
    # beyond the candidates: the others follow, so the ratio is still exact
    kf9 = to_keep_file("eeprune", small, res, 0.9, "mlp", budget)
    assert len(kf9.kept) == 80 and kf9.provenance["meta"]["discarded_not_meeting_conditions"] > 0


def test_eeprune_keeps_hard_samples(small, ee_scores) -> None:
    """Discarded (easy) samples have a lower final-loss proxy than kept ones: EL2N agrees."""
    from edge_ee.dataprune.scorers import ScoreBudget, get_scorer, keep_indices
    res, _ = ee_scores
    el2n = get_scorer("el2n").score(small, "mlp", ScoreBudget(epochs=3.0, seeds=2, batch_size=64,
                                                              lr=0.1), progress=False)
    assert len(el2n.meta["train_accuracy_per_seed"]) == 2
    assert 0.0 <= el2n.scores.min() and el2n.scores.max() <= np.sqrt(2) + 1e-9
    kept = keep_indices(res.scores, 0.5)
    mask = np.zeros(len(small), bool)
    mask[kept] = True
    assert el2n.scores[mask].mean() > el2n.scores[~mask].mean() + 0.1


def test_forgetting_and_random(small) -> None:
    from edge_ee.dataprune.scorers import ScoreBudget, get_scorer, keep_indices
    res = get_scorer("forgetting").score(small, "mlp", ScoreBudget(epochs=3.0, batch_size=64,
                                                                   lr=0.1), progress=False)
    s = res.scores
    assert np.all(s == np.round(s)) and s.min() == 0
    assert res.meta["unforgettable"] == int((s == 0).sum()) > 100
    if res.meta["never_learned"]:
        assert (s == s.max()).sum() >= res.meta["never_learned"]
    b = ScoreBudget(seed=3)
    r1 = get_scorer("random").score(small, "mlp", b).scores
    assert np.array_equal(r1, get_scorer("random").score(small, "mlp", b).scores)
    assert not np.array_equal(r1, get_scorer("random").score(small, "mlp", ScoreBudget(seed=4)).scores)
    kept = keep_indices(r1, 0.5)
    per_class = np.bincount(small.labels[kept], minlength=10)
    assert per_class.min() > 20 and per_class.max() < 60  # 80 per class, about half kept


def test_bad_scorer_labels_and_exit(small) -> None:
    from edge_ee.dataprune.models import exit_point
    from edge_ee.dataprune.scorers import ScoreBudget, check_data, get_scorer
    with pytest.raises(ConfigError, match="valid scorers: eeprune, el2n, forgetting, random"):
        get_scorer("grand")
    with pytest.raises(DataError, match="10 classes but the model 5"):
        get_scorer("random").score(small, "mlp", ScoreBudget(), num_classes=5)
    bad = small.subset(np.arange(len(small)))
    object.__setattr__(bad, "labels", bad.labels.copy())
    bad.labels[3] = 12
    with pytest.raises(DataError, match=r"outside 0\.\.9"):
        check_data(bad, 10)
    assert exit_point("compact-cnn", "before") == 0 and exit_point("small-cnn", "after") == 3
    for loc in ("top", 4, "-1"):
        with pytest.raises(ConfigError, match="does not exist in compact-cnn"):
            exit_point("compact-cnn", loc)


def test_keep_file_roundtrip_subset_sampler_and_sha(tmp_path, small, full_train, ee_scores) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from edge_ee.dataprune.harness import balanced_subset
    from edge_ee.dataprune.keepfile import (
        KeepFile,
        KeepFileError,
        dataset_sha256,
        read_keep_file,
        write_keep_file,
    )
    from edge_ee.dataprune.scorers import to_keep_file
    res, budget = ee_scores
    kf = to_keep_file("eeprune", small, res, 0.3, "mlp", budget)
    path = write_keep_file(kf, tmp_path / "k" / "keep.json")
    assert [p.name for p in path.parent.iterdir()] == ["keep.json"]  # no temporary left
    back = read_keep_file(path)
    assert np.array_equal(back.kept, kf.kept) and back.data_sha256 == dataset_sha256(small)
    prov = back.provenance
    assert (prov["scorer"], prov["seed"], prov["epochs"], prov["model"]) == ("eeprune", 0, 2.0, "mlp")
    doc = json.loads(path.read_text())
    assert sorted(doc["kept"] + doc["discarded"]) == list(range(len(small)))
    sub = back.subset(small)
    assert len(sub) == 560 and np.array_equal(sub.labels, small.labels[np.sort(kf.kept)])
    assert len(back.discarded_subset(small)) == 240
    # the same size, other samples: refused
    other = balanced_subset(full_train, 80, 99)
    with pytest.raises(KeepFileError, match="does not match the keep file"):
        back.subset(other)
    with pytest.raises(KeepFileError, match="covers 800 samples but the data has 10"):
        back.subset(small.subset(np.arange(10)))
    # a torch Dataset: Subset and Sampler used by a DataLoader directly
    ds = TensorDataset(torch.arange(50), torch.arange(50) % 5)
    tk = KeepFile(np.array([1, 4, 9, 30]), np.zeros(50), dataset_sha256(ds))
    assert [int(x) for x, _ in back_iter(DataLoader(tk.subset(ds), batch_size=10))] == [1, 4, 9, 30]
    seen = sorted(int(v) for x, _ in DataLoader(ds, batch_size=2, sampler=tk.sampler(ds)) for v in x)
    assert seen == [1, 4, 9, 30]
    with pytest.raises(KeepFileError, match="does not match"):
        tk.sampler(TensorDataset(torch.arange(50) + 1, torch.arange(50) % 5))
    (tmp_path / "bad.json").write_text('{"schema": "other"}')
    with pytest.raises(KeepFileError, match="not an edge-ee keep file"):
        read_keep_file(tmp_path / "bad.json")


def back_iter(loader):
    for x, y in loader:
        yield from zip(x, y, strict=True)


def test_harness_and_report(tmp_path) -> None:
    from edge_ee.dataprune.config import PruneDataConfig
    from edge_ee.dataprune.harness import run_evaluation
    from edge_ee.dataprune.report import write_report
    cfg = PruneDataConfig(train_per_class=40, test_per_class=20, model="mlp", train_epochs=2,
                          score_epochs=1, scorers=("random", "eeprune"), ratios=(0.5,),
                          seeds=(0,), batch_size=32, lr=0.05, out=str(tmp_path / "ev"),
                          progress=False, ablation_ratio=0.5)
    ev = run_evaluation(cfg)
    keys = {r["key"] for r in ev.runs}
    assert keys == {"full/s0", "random/r0.5/s0", "eeprune/r0.5/s0", "eeprune+cb/r0.5/s0",
                    "eeprune-Dp/r0.5/s0", "eeprune@before/r0.5/s0", "eeprune@after/r0.5/s0"}
    assert ev.discard_per_class["eeprune+cb"]["0.5"] == pytest.approx([0.5] * 10)
    by = {r["key"]: r for r in ev.runs}
    assert by["random/r0.5/s0"]["n_train"] == by["eeprune-Dp/r0.5/s0"]["n_train"] == 200
    assert by["random/r0.5/s0"]["steps"] == by["eeprune/r0.5/s0"]["steps"] == 13  # equal samples
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in ev.runs)
    assert by["full/s0"]["test_accuracy"] > 0.35  # 400 samples, 26 steps: learned something
    assert ev.scorer_costs["eeprune"]["energy_estimated"] is True
    assert ev.scorer_costs["eeprune"]["wall_s"] > 0
    assert len(ev.discard_per_class["eeprune"]["0.5"]) == 10
    md = write_report(ev, cfg.out).read_text()
    for f in ("summary.csv", "summary.json", "report.html", "accuracy_vs_ratio.png",
              "discard_heatmap.png", "runs.jsonl", "keep/eeprune-r50.json"):
        assert (tmp_path / "ev" / f).is_file(), f
    assert "discarded D_p" in md and "exit location" in md and "(estimated)" in md
    assert "| eeprune+cb |" in md and by["full/s0"]["train_cpu_s"] > 0
    # a rerun resumes: nothing is trained again
    lines = (tmp_path / "ev" / "runs.jsonl").read_text().splitlines()
    run_evaluation(cfg)
    assert (tmp_path / "ev" / "runs.jsonl").read_text().splitlines() == lines


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_cli("edge-ee", "prune-data", *args, cwd=cwd, timeout=300, threads=1)


def test_cli_scores_writes_keep_file_and_refuses_bad_input(tmp_path, full_train) -> None:
    from edge_ee.dataprune.harness import balanced_subset
    from edge_ee.dataprune.keepfile import KeepFile, dataset_sha256, write_keep_file
    (tmp_path / "r.yaml").write_text("scorer: eeprune\nmodel: mlp\ntrain_per_class: 30\n"
                                     "score_epochs: 1\nratio: 0.4\n")
    r = _cli("--recipe", "r.yaml", "--keep-out", "k.json", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["kept"] == 180 and out["discarded"] == 120 and out["cost"]["energy_estimated"]
    assert json.loads((tmp_path / "k.json").read_text())["provenance"]["scorer"] == "eeprune"
    other = balanced_subset(full_train, 30, 7)
    write_keep_file(KeepFile(np.arange(10), np.zeros(300), dataset_sha256(other)), tmp_path / "o.json")
    (tmp_path / "bad.yaml").write_text("scorer: eeprune\nratios: [0.5]\nwidth: 3\n")
    for args, msg in [(["--check-keep", "o.json", "--train-per-class", "30"], "does not match"),
                      (["--ratio", "1.0"], r"outside [0, 1)"),
                      (["--scorer", "grand"], "valid scorers: eeprune, el2n, forgetting, random"),
                      (["--exit", "7"], "exit location 7 does not exist"),
                      (["--recipe", "bad.yaml"], "unknown key 'width'")]:
        r = _cli(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr[-1000:])
        assert msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr[-1000:])
