"""Pruning early-exit networks: methods × schedules, exports, bad input, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_ee.errors import ConfigError
from tests.helpers_data import SHARED_DATA, fashion_subset, needs_fashion

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    return fashion_subset(1000, 300)


@pytest.fixture(scope="module")
def model(data):
    """Shipped CNN + linear exits after children 1-3, trained ic-only for 20 steps."""
    from edge_ee.exitnet import from_sequential
    from edge_ee.exits.trained import TrainExitsConfig, attach_exits, train_exits
    from edge_ee.models.small_cnn import load_small_cnn

    net = from_sequential(load_small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28), "fashion-cnn")
    m = attach_exits(net, [1, 2, 3])
    train_exits(m, data[0], TrainExitsConfig(max_steps=20, lr=0.1), progress=False)
    return m


def _untrained():
    from edge_ee.exitnet import from_sequential
    from edge_ee.exits.trained import attach_exits
    from edge_ee.models.small_cnn import small_cnn

    return attach_exits(from_sequential(small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28)), [1, 2, 3])


@pytest.mark.shared_data
@needs_fashion
def test_structured_pruning_cuts_flops_and_params_and_exports(model, data, tmp_path):
    from device_runners.backends import open_backend
    from device_runners.manifest import load_bundle
    from edge_ee.exits.trained import exit_accuracies
    from edge_ee.pruning import PruneConfig, export_pruned, prune_early_exit

    cfg = PruneConfig(method="structured", ratio=0.3, rounds=2, steps_per_round=3)
    pruned, rep = prune_early_exit(model, data[0], cfg, progress=False)
    assert rep.flops_after < 0.8 * rep.flops_before
    assert rep.params_after < 0.8 * rep.params_before
    assert sum(p.numel() for p in model.parameters()) == rep.params_before  # input untouched
    # exit heads follow the pruned channels: in_features == channels of the feature they read
    shapes = pruned.net.feature_shapes()
    for i in pruned.exit_indices:
        assert pruned.exits[str(i)].linear.in_features == shapes[i][0]
    assert shapes[3][0] < 64
    accs = exit_accuracies(pruned, data[1])
    assert len(accs) == 4 and accs[-1] > 0.3  # still a classifier
    path, rec = export_pruned(pruned, data[0].subset(np.arange(300)), data[1], tmp_path / "s",
                              "pruned-test", max_drop=0.05)
    bundle = load_bundle(path)
    assert bundle.manifest["cost"]["full_flops"] == rec["full_flops"] < rep.flops_before
    out = open_backend(bundle, "onnxruntime").run(0, data[1].subset(np.arange(4)).normalised())
    assert out["prediction"].shape == (4,)


@pytest.mark.shared_data
@needs_fashion
def test_unstructured_simultaneous_reaches_target_sparsity(model, data):
    from torch.nn.utils import prune

    from edge_ee.pruning import PruneConfig, prune_early_exit
    from edge_ee.pruning.config import prunable_layers

    cfg = PruneConfig(method="unstructured", ratio=0.6, rounds=3, steps_per_round=2)
    pruned, rep = prune_early_exit(model, data[0], cfg, progress=False)
    layers = prunable_layers(pruned)
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    total = sum(m.weight.numel() for m in layers.values())
    assert zeros / total == pytest.approx(0.6, abs=0.01)
    assert not any(prune.is_pruned(m) for m in layers.values())  # permanent: no masks left
    assert set(rep.layer_sparsity) == set(layers)
    assert rep.flops_after == rep.flops_before  # dense FLOPs: zeros are not skipped


@pytest.mark.shared_data
@needs_fashion
def test_sequential_keeps_backbone_frozen_in_phase2(model, data):
    from edge_ee.pruning import PruneConfig, prune_early_exit

    cfg = PruneConfig(method="unstructured", schedule="sequential", ratio=0.5, rounds=2,
                      steps_per_round=2)
    pruned, rep = prune_early_exit(model, data[0], cfg, progress=False)
    assert rep.backbone_digest["after_phase1"] == rep.backbone_digest["final"]
    # phase 2 pruned the exits (one global pool of their own) to the same sparsity
    heads = [pruned.exits[str(i)].linear.weight for i in pruned.exit_indices]
    zeros = sum(int((w == 0).sum()) for w in heads)
    assert zeros / sum(w.numel() for w in heads) == pytest.approx(0.5, abs=0.01)
    sim, _ = prune_early_exit(model, data[0], cfg.__class__(**{**cfg.__dict__,
                                                              "schedule": "simultaneous"}),
                              progress=False)
    assert not torch.equal(sim.exits["1"].linear.weight, pruned.exits["1"].linear.weight)


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.2])
def test_ratio_outside_open_interval_is_refused(ratio):
    from edge_ee.pruning import PruneConfig

    with pytest.raises(ConfigError, match=r"ratio must be in \(0, 1\)"):
        PruneConfig(ratio=ratio)


def test_unknown_layer_is_refused_with_a_suggestion():
    from edge_ee.pruning import PruneConfig, prune_early_exit

    with pytest.raises(ConfigError, match=r"'exits.1.linaer' does not exist.*exits.1.linear"):
        prune_early_exit(_untrained(), None, PruneConfig(ignore_layers=("exits.1.linaer",)))


def test_pruning_that_empties_a_layer_is_refused():
    from edge_ee.pruning import PruneConfig, prune_early_exit

    m = _untrained()
    with torch.no_grad():
        m.exits["2"].linear.weight.mul_(1e-6)  # global magnitude would take all of it
    with pytest.raises(ConfigError, match=r"every weight of layer 'exits.2.linear'"):
        prune_early_exit(m, None, PruneConfig(ratio=0.5, rounds=1, steps_per_round=0),
                         progress=False)
    with pytest.raises(ConfigError, match=r"every channel of layer 'net\.stages"):
        prune_early_exit(_untrained(), None, PruneConfig(method="structured", ratio=0.99,
                                                         rounds=1, steps_per_round=0),
                         progress=False)


def test_recipe_unknown_key_and_nested_training(tmp_path):
    import argparse

    from edge_ee.cli_training import register

    parser = argparse.ArgumentParser()
    cmds = register(parser.add_subparsers(dest="command"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("ratio: 0.3\nrounds: 2\nlearning_rate: 0.1\n")
    args = parser.parse_args(["prune", "--recipe", str(recipe)])
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        cmds["prune"](args)
    recipe.write_text("ratio: 0.3\ntrain_exits: {mode: ic-only, warmup: 3}\n")
    with pytest.raises(ConfigError, match="unknown key 'warmup'"):
        cmds["prune"](parser.parse_args(["prune", "--recipe", str(recipe)]))


def test_sparsity_figure_written(tmp_path):
    from edge_ee.pruning import sparsity_figure

    sim = {"net.stages.0.0.0": 0.2, "exits.1.linear": 0.5}
    seq = {"net.stages.0.0.0": 0.3, "exits.1.linear": 0.4}
    path = sparsity_figure(sim, seq, tmp_path / "s.png")
    assert path.stat().st_size > 1000


def test_cli_bad_ratio_exits_2_with_message():
    env = {**os.environ, "EDGE_EE_DATA": str(SHARED_DATA)}
    proc = subprocess.run([sys.executable, "-m", "edge_ee.cli", "prune", "--ratio", "1.5"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "pruning ratio must be in (0, 1)" in proc.stderr
