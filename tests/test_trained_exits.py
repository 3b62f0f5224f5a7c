"""Trained exit heads (SDN ic-only, BranchyNet joint), their export, and E2CM + trained heads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edge_ee.errors import ConfigError, ModelError
from tests.helpers_data import fashion_subset, needs_fashion

pytestmark = [pytest.mark.shared_data, needs_fashion]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    return fashion_subset(2000, 400)


@pytest.fixture(scope="module")
def trained(data):
    """The shipped CNN with linear exits after children 1-3, trained ic-only for 40 steps."""
    from edge_ee.exitnet import from_sequential
    from edge_ee.exits.trained import TrainExitsConfig, attach_exits, train_exits
    from edge_ee.models.small_cnn import load_small_cnn
    from edge_ee.pruning.schedules import backbone_digest

    net = from_sequential(load_small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28), "fashion-cnn")
    model = attach_exits(net, [1, 2, 3])
    before = backbone_digest(model)
    rep = train_exits(model, data[0], TrainExitsConfig(max_steps=40, lr=0.1), progress=False)
    return model, rep, before


def test_trained_heads_learn_and_backbone_stays_frozen(trained, data):
    from edge_ee.exits.trained import exit_accuracies
    from edge_ee.pruning.schedules import backbone_digest

    model, rep, before = trained
    accs = exit_accuracies(model, data[1])
    assert rep.steps == 40
    assert np.mean(rep.losses[-5:]) < np.mean(rep.losses[:5])
    assert min(accs[:-1]) > 0.2 and accs[2] > 0.5, accs  # chance is 0.1
    assert backbone_digest(model) == before  # ic-only never touches the backbone


def test_joint_training_updates_backbone(data):
    from edge_ee.exitnet import from_sequential
    from edge_ee.exits.trained import TrainExitsConfig, attach_exits, train_exits
    from edge_ee.models.small_cnn import load_small_cnn
    from edge_ee.pruning.schedules import backbone_digest

    net = from_sequential(load_small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28), "fashion-cnn")
    model = attach_exits(net, [2])
    before = backbone_digest(model)
    cfg = TrainExitsConfig(mode="joint", max_steps=3, exit_weights=(0.5,), backbone_lr=1e-3)
    rep = train_exits(model, data[0], cfg, progress=False)
    assert rep.steps == 3 and all(np.isfinite(rep.losses))
    assert backbone_digest(model) != before
    assert not model.training


def test_trained_bundle_exports_and_onnxruntime_agrees(trained, data, tmp_path):
    from device_runners.backends import open_backend
    from device_runners.manifest import load_bundle
    from edge_ee.exits.fit import score_split
    from edge_ee.exits.trained import calibrate_heads, to_exit_heads
    from edge_ee.pipeline import export

    model, _, _ = trained
    heads = to_exit_heads(model, "entropy")
    assert heads[0] is None and heads[1].scorer.kind == "trained"
    fitted = calibrate_heads(model.net, heads, data[0].subset(np.arange(500)), max_drop=0.02)
    assert any(h is not None and h.enabled for h in heads), fitted.chosen
    out = export(model.net, heads, tmp_path / "b", data[1], "trained-test")
    manifest = json.loads((out / "manifest.json").read_text())
    kinds = [s["exit"]["kind"] for s in manifest["segments"]]
    assert kinds[-1] == "final" and set(kinds[:-1]) == {"trained"}
    assert manifest["segments"][0]["exit"]["confidence"] == "entropy"
    # onnxruntime reproduces torch's exit decisions on real test images
    bundle = load_bundle(out)
    be = open_backend(bundle, "onnxruntime")
    x = data[1].subset(np.arange(100)).normalised()
    seg0 = manifest["segments"][0]
    (scores,) = score_split(model.net, [heads], data[1].subset(np.arange(100)), 100, False)
    i = seg0["exit"]["exit_index"]
    pred, conf, _ = heads[i].decide(scores.raw[i])
    got = be.run(0, x)
    np.testing.assert_allclose(got["confidence"], conf.numpy(), atol=1e-4)
    assert (got["prediction"] == pred.numpy()).mean() >= 0.99


def test_combined_heads_export_with_both_rules(trained, data, tmp_path):
    from edge_ee.exits.combined import CombinedHead, combine_heads
    from edge_ee.exits.trained import calibrate_heads, to_exit_heads
    from edge_ee.pipeline import FitConfig, export, fit_exits

    model, _, _ = trained
    net = model.net
    e2cm = fit_exits(net, data[0], FitConfig(exits=(1, 2, 3)), progress=False, choose=False).heads
    trained_heads = to_exit_heads(model)
    feat = net.stages[1](net.stages[0](torch.from_numpy(data[1].normalised()[:16])))
    for rule in ("mean", "product"):
        head = CombinedHead(e2cm[1], trained_heads[1], rule)
        p = torch.softmax(head.raw_scores(feat), 1)
        if rule == "mean":  # the raw scores are log p of the averaged distribution
            torch.testing.assert_close(head.raw_scores(feat).exp().sum(1), torch.ones(16))
        assert torch.allclose(p.sum(1), torch.ones(16), atol=1e-5)
    combined = combine_heads(e2cm, trained_heads, "mean")
    calibrate_heads(net, combined, data[0].subset(np.arange(500)), max_drop=0.02)
    for h in combined[1:4]:
        h.set_threshold(0.9)  # export every exit regardless of the calibrated choice
    out = export(net, combined, tmp_path / "c", data[1], "combined-test")
    kinds = [s["exit"]["kind"] for s in json.loads((out / "manifest.json").read_text())["segments"]]
    assert kinds == ["e2cm+trained"] * 3 + ["final"]


def test_bad_trained_exit_config():
    from edge_ee.exits.combined import COMBINE_RULES
    from edge_ee.exits.trained import TrainExitsConfig

    with pytest.raises(ConfigError, match="mode"):
        TrainExitsConfig(mode="branchy")
    with pytest.raises(ConfigError, match="confidence"):
        TrainExitsConfig(confidence="margin2")
    with pytest.raises(ConfigError, match="epochs"):
        TrainExitsConfig(epochs=0)
    assert COMBINE_RULES == ("mean", "product")


def test_exit_points_must_exist():
    from edge_ee.exitnet import from_sequential
    from edge_ee.exits.trained import EarlyExitModel, attach_exits
    from edge_ee.models.small_cnn import small_cnn

    net = from_sequential(small_cnn(), [0, 1, 2], (1, 28, 28))
    with pytest.raises(ConfigError, match=r"exit points \[7\] do not exist"):
        attach_exits(net, [1, 7])
    with pytest.raises(ModelError, match="do not exist"):
        EarlyExitModel(net, {5: None})  # type: ignore[dict-item]
