"""Pruning that recovers: distillation from the unpruned network, reused trained exits,
the wall budget and the accuracy-drop warning, through the API and the CLI."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest
import torch

from edge_ee.errors import ConfigError
from tests.helpers_cli import run_cli
from tests.helpers_data import SHARED_DATA, fashion_subset, needs_fashion

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.shared_data, needs_fashion]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    return fashion_subset(1000, 500)


def _net():
    from edge_ee.exitnet import from_sequential
    from edge_ee.models.small_cnn import load_small_cnn

    return from_sequential(load_small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28), "fashion-cnn")


@pytest.fixture(scope="module")
def model(data):
    """Shipped Fashion-MNIST CNN + linear exits after children 1-3, trained ic-only."""
    from edge_ee.exits.trained import TrainExitsConfig, attach_exits, train_exits

    m = attach_exits(_net(), [1, 2, 3])
    train_exits(m, data[0], TrainExitsConfig(max_steps=30, lr=0.1), progress=False)
    return m


def test_distillation_recovers_what_pruning_lost_in_a_tiny_budget(model, data):
    from edge_ee.pruning import PruneConfig, prune_early_exit

    base = dict(method="structured", ratio=0.6, rounds=1, steps_per_round=0)
    _, none = prune_early_exit(model, data[0], PruneConfig(**base), progress=False,
                               evaluate=data[1])
    # far more epochs than 6 CPU-seconds allow: the budget stops recovery, the cosine ends
    # there (process CPU time, so the result does not depend on the machine's load)
    cfg = PruneConfig(**base, recovery="distill", recover_epochs=500, budget_min=0.1,
                      budget_clock="cpu")
    _, kd = prune_early_exit(model, data[0], cfg, progress=False, evaluate=data[1])
    assert kd.stopped_at_budget and 0 < kd.recover_steps < kd.recover_steps_planned
    assert 6.0 <= kd.cpu_seconds < 6.0 + 2.0  # the budget, plus the step that straddles it
    assert kd.budget_clock == "cpu" and kd.budget_s == 6.0
    # same pruning: "after pruning" of the distilled run is the no-recovery result
    assert kd.accuracy_pruned == none.accuracy_after
    assert none.accuracy_before == kd.accuracy_before
    drop_none = none.accuracy_before[-1] - none.accuracy_after[-1]
    drop_kd = kd.accuracy_before[-1] - kd.accuracy_after[-1]
    assert drop_none > 0.05, "ratio 0.6 without recovery should hurt the final output"
    assert drop_kd < drop_none / 2  # distillation won back at least half of the loss
    # every exit gained too
    assert all(a > b for a, b in zip(kd.accuracy_after, kd.accuracy_pruned, strict=True))


def test_kd_loss_is_hinton_form():
    from edge_ee.pruning.recovery import kd_loss

    s, t = torch.randn(8, 5), torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    T = 3.0
    p = torch.softmax(t / T, 1)
    kl = (p * (p.log() - torch.log_softmax(s / T, 1))).sum(1).mean()
    want = 0.7 * T * T * kl + 0.3 * torch.nn.functional.cross_entropy(s, y)
    assert kd_loss(s, t, y, T, 0.7).item() == pytest.approx(want.item(), rel=1e-5)
    assert kd_loss(t, t, y, T, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_reused_exits_survive_pruning_with_matching_shapes(model, data, tmp_path):
    from edge_ee.exits.saved import load_exits, save_exits
    from edge_ee.pruning import PruneConfig, prune_early_exit

    path = tmp_path / "exits.pt"
    save_exits(model, path, "a" * 64, "ic-only")
    again = load_exits(_net(), path, "a" * 64)
    assert again.exit_indices == model.exit_indices
    for i in model.exit_indices:
        assert torch.equal(again.exits[str(i)].linear.weight, model.exits[str(i)].linear.weight)
    cfg = PruneConfig(method="structured", ratio=0.4, rounds=1, steps_per_round=0)
    pruned, rep = prune_early_exit(again, data[0], cfg, progress=False)
    shapes = pruned.net.feature_shapes()
    for i in pruned.exit_indices:
        w0 = again.exits[str(i)].linear.weight
        w = pruned.exits[str(i)].linear.weight
        assert w.shape[1] == shapes[i][0] * again.exits[str(i)].pool ** 2
        if i < 3:  # feature channels pruned before these exits: fewer input columns
            assert w.shape[1] < w0.shape[1]
        # the trained head kept the columns of the surviving channels, not new weights
        kept = [any(torch.equal(col, c0) for c0 in w0.T) for col in w.T]
        assert all(kept)
    assert rep.flops_after < rep.flops_before


def test_trained_exits_file_refuses_another_backbone_and_tampering(model, tmp_path):
    from edge_ee.exits.saved import load_exits, save_exits

    path = tmp_path / "exits.pt"
    save_exits(model, path, "a" * 64)
    with pytest.raises(ConfigError, match="trained on another backbone"):
        load_exits(_net(), path, "b" * 64)
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ConfigError, match="does not match"):
        load_exits(_net(), path, "a" * 64)
    with pytest.raises(ConfigError, match=r"train-exits \.\.\. --exits-file"):
        load_exits(_net(), tmp_path / "missing.pt", "a" * 64)


def test_drop_beyond_the_allowed_is_a_warning_saying_what_to_do(model, data, caplog):
    from edge_ee.pruning import PruneConfig, prune_early_exit

    cfg = PruneConfig(method="structured", ratio=0.6, rounds=1, steps_per_round=0,
                      max_accuracy_drop=0.01)
    with caplog.at_level(logging.WARNING, logger="edge_ee"):
        _, rep = prune_early_exit(model, data[0], cfg, progress=False, evaluate=data[1])
    assert len(rep.warnings) == 1
    msg = rep.warnings[0]
    assert "points below the unpruned" in msg and "--recovery distill" in msg
    assert "--recover-epochs" in msg and "--ratio, now 0.6" in msg
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [msg]
    loose = PruneConfig(method="structured", ratio=0.6, rounds=1, steps_per_round=0,
                        max_accuracy_drop=1.0)
    assert prune_early_exit(model, data[0], loose, progress=False, evaluate=data[1])[1].warnings == []


@pytest.mark.parametrize("bad", [{"recovery": "kd"}, {"kd_alpha": 1.5}, {"budget_min": 0},
                                 {"recover_epochs": -1}, {"kd_exit_teacher": "first"}])
def test_bad_recovery_config_is_refused(bad):
    from edge_ee.pruning import PruneConfig

    with pytest.raises(ConfigError):
        PruneConfig(**bad)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli("edge-ee", *args, cwd=ROOT, timeout=300,
                   env={"EDGE_EE_DATA": str(SHARED_DATA)})


@pytest.mark.slow
def test_cli_train_exits_then_prune_reuses_them_warns_and_prints_valid_json(tmp_path):
    exits = tmp_path / "exits.pt"
    subset = ["--model", "fashion-cnn", "--train-subset", "600", "--test-subset", "300"]
    proc = _cli("train-exits", *subset, "--max-steps", "20", "--exits-file", str(exits))
    assert proc.returncode == 0, proc.stderr
    assert exits.is_file() and Path(f"{exits}.sha256").is_file()
    proc = _cli("--quiet", "prune", *subset, "--exits-file", str(exits), "--method", "structured",
                "--schedule", "both", "--ratio", "0.5", "--rounds", "2",
                "--steps-per-round", "1", "--recovery", "distill", "--recover-epochs", "0.3",
                "--max-accuracy-drop", "0")
    assert proc.returncode == 0, proc.stderr
    assert f"reusing trained exits [0, 1, 2, 3, 4] from {exits}" in proc.stderr
    assert "WARNING: pruned final accuracy" in proc.stderr
    result = json.loads(proc.stdout)  # the whole report, never cut
    assert len(proc.stdout) > 2000
    assert result["exits_file"] == str(exits)
    for s in ("simultaneous", "sequential"):
        r = result[s]
        assert r["recovery"] == "distill" and r["recover_steps"] > 0
        assert len(r["accuracy_after"]) == 6 and r["per_exit_accuracy"] == r["accuracy_after"]
    assert len(result["warnings"]) == 2  # one per schedule (no drop allowed at all)
    bad = _cli("prune", *subset, "--exits-file", str(exits), "--train-max-steps", "3")
    assert bad.returncode != 0 and "--train-max-steps" in bad.stderr
