"""Lean exit heads decide as the calibration form does; boundary timing is robust and
recorded as the host's own; class-balanced samples (issue 15 items 2, 3, 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_ee.boundary import BoundaryProtocol, quantise, time_interleaved
from edge_ee.data import balanced_indices
from edge_ee.errors import ConfigError


def test_balanced_indices_take_every_class_equally() -> None:
    labels = np.repeat(np.arange(10), 1000)  # sorted by class, as the test splits are
    idx = balanced_indices(labels, 1003, seed=1)
    assert len(idx) == 1003 and np.all(np.diff(idx) > 0)
    counts = np.bincount(labels[idx], minlength=10)
    assert counts.min() == 100 and counts.max() == 101 and counts.sum() == 1003
    assert np.array_equal(idx, balanced_indices(labels, 1003, seed=1))
    assert len(balanced_indices(labels, 20000)) == 10000


def test_quantise_and_protocol() -> None:
    assert quantise(0.071, 0.02) == pytest.approx(0.08)
    assert quantise(0.069, 0.02) == pytest.approx(0.06)
    assert quantise(-0.013, 0.02) == 0.0
    with pytest.raises(ConfigError, match="grid"):
        BoundaryProtocol(grid=0.0)
    with pytest.raises(ConfigError, match="rounds"):
        BoundaryProtocol(rounds=3)
    calls = [lambda: sum(range(50)), lambda: sum(range(500))]
    t = time_interleaved(calls, BoundaryProtocol(rounds=40, warmup_rounds=5, min_duration_s=0.0))
    assert t.shape == (40, 2) and np.all(t > 0)


SPECS = ["e2cm", "e2cm:2", "lda:2", "e2cm:1:temperature", "lda:2:margin"]


@pytest.fixture(scope="module")
def fitted_variants(fashion):
    """The shipped CNN with every spec's heads at all 5 exits, fitted in one pass."""
    from edge_ee.exitnet import from_sequential
    from edge_ee.exits import ExitSpec
    from edge_ee.models.small_cnn import load_small_cnn
    from edge_ee.pipeline import fit_variants
    net = from_sequential(load_small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28), "fashion-cnn")
    head_sets, _, _ = fit_variants(net, fashion[0], [[ExitSpec.parse(s)] * 5 for s in SPECS],
                                   progress=False)
    return net, dict(zip(SPECS, head_sets, strict=True))


@pytest.mark.shared_data
@pytest.mark.parametrize("spec", SPECS)
def test_lean_head_decides_as_the_calibration_form(fashion, fitted_variants, spec) -> None:
    """Real features of the shipped CNN: the exported (lean) forward and the calibration
    form `decide(raw_scores)` give the same predictions, confidences and exit flags."""
    from edge_ee.exits.fit import batches
    net, head_sets = fitted_variants
    x = torch.cat([b for b, _ in batches(fashion[1], 500)])
    with torch.no_grad():
        for stage, head in zip(net.stages, head_sets[spec], strict=True):
            x = stage(x)
            ref = head.reference_forward(x)
            head.set_threshold(float(ref[1].median()))
            pred_r, conf_r, flag_r = head.reference_forward(x)
            pred_l, conf_l, flag_l = head(x)
            # float32 rounding scales with the scores (margins of LDA scores ~100 differ ~1e-5)
            tol = 2e-5 * (1.0 + float(head.scores(x).abs().max()))
            assert torch.equal(pred_r, pred_l)
            assert torch.allclose(conf_r, conf_l, atol=tol, rtol=1e-5)
            near = (conf_r - head.threshold).abs() < tol
            assert torch.equal(flag_r[~near], flag_l[~near])


@pytest.mark.shared_data
def test_host_boundary_measurement_is_quantised_and_labelled(fitted_variants) -> None:
    """Real exports and onnxruntime sessions: costs lie on the grid, the head FLOPs already
    counted are not charged twice, and the record says the host measured it."""
    from edge_ee.boundary import measure_boundaries
    from edge_ee.cost import cost_table
    net, head_sets = fitted_variants
    pooled = head_sets["e2cm:2"]
    heads = [None, pooled[1], None, pooled[3], None]
    costs = cost_table(net, heads)
    proto = BoundaryProtocol(rounds=60, warmup_rounds=10, min_duration_s=0.2, grid=0.05)
    m = measure_boundaries(net, heads, costs.full_flops, costs.head_flops, proto)
    for i in (0, 2, 4):
        assert m.fraction[i] == m.overhead_flops[i] == 0.0
    for i in (1, 3):
        assert m.fraction[i] / 0.05 == pytest.approx(round(m.fraction[i] / 0.05))
        assert m.overhead_flops[i] == pytest.approx(
            max(0.0, m.fraction[i] * costs.full_flops - costs.head_flops[i]))
    rec = m.to_json()
    assert rec["source"] == "host" and rec["rounds"] >= 60 and rec["full_latency_ns"] > 0
    assert "median" in rec["statistic"] and rec["runtime"].startswith("onnxruntime")
