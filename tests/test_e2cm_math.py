"""E2CM / LDA statistics and decisions against direct numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_ee.errors import CalibrationError, ConfigError
from edge_ee.exits import ExitSpec
from edge_ee.exits.fit import fit_temperature
from edge_ee.exits.heads import ClassMeanScorer, ExitHead, FeatureTransform
from edge_ee.exits.stats import ClassStats


def _toy(n: int = 300, d: int = 6, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centers = rng.normal(0, 3, (k, d))
    x = centers[y] + rng.normal(0, 1, (n, d))
    return x.astype(np.float32), y


def test_streaming_statistics_equal_direct_computation() -> None:
    x, y = _toy()
    st = ClassStats(3, 6, with_scatter=True)
    for s in range(0, len(x), 64):  # streamed in uneven batches
        st.update(torch.from_numpy(x[s : s + 64]), torch.from_numpy(y[s : s + 64]))
    mu = np.stack([x[y == k].astype(np.float64).mean(0) for k in range(3)])
    np.testing.assert_allclose(st.means().numpy(), mu, rtol=1e-10)
    rms = np.sqrt(((x[:, None, :] - mu[None]) ** 2).sum(-1).mean(0))
    np.testing.assert_allclose(st.rms_normaliser().numpy(), rms, rtol=1e-8)
    within = sum(((x[y == k] - mu[k]).T @ (x[y == k] - mu[k])) for k in range(3)) / (300 - 3)
    np.testing.assert_allclose(st.shared_covariance(0.0).numpy(), within, rtol=1e-6)
    shrunk = st.shared_covariance(0.5).numpy()
    np.testing.assert_allclose(shrunk, 0.5 * within + 0.5 * np.trace(within) / 6 * np.eye(6),
                               rtol=1e-6)


def test_merge_is_an_all_reduce() -> None:
    x, y = _toy()
    a, b, whole = ClassStats(3, 6), ClassStats(3, 6), ClassStats(3, 6)
    a.update(torch.from_numpy(x[:100]), torch.from_numpy(y[:100]))
    b.update(torch.from_numpy(x[100:]), torch.from_numpy(y[100:]))
    whole.update(torch.from_numpy(x), torch.from_numpy(y))
    a.merge(b)
    np.testing.assert_allclose(a.means().numpy(), whole.means().numpy())


def test_e2cm_decision_matches_the_paper_formula() -> None:
    x, y = _toy()
    mu = np.stack([x[y == k].mean(0) for k in range(3)]).astype(np.float64)
    nu = np.array([1.5, 2.0, 2.5])
    head = ExitHead(FeatureTransform(None), ClassMeanScorer(torch.from_numpy(mu),
                    torch.from_numpy(1 / nu)), "max_softmax", threshold=0.6)
    pred, conf, flag = head(torch.from_numpy(x))
    d = np.linalg.norm(x[:, None, :] - mu[None], axis=-1) / nu
    p = np.exp(-d) / np.exp(-d).sum(1, keepdims=True)
    np.testing.assert_allclose(conf.numpy(), p.max(1), atol=1e-5)
    assert (pred.numpy() == p.argmax(1)).all()
    assert (flag.numpy() == (p.max(1) > 0.6)).all()


def test_margin_confidence_is_gap_of_two_nearest_means() -> None:
    mu = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
    head = ExitHead(FeatureTransform(None), ClassMeanScorer(mu), "margin", threshold=1.0)
    pred, conf, flag = head(torch.tensor([[1.0, 0.0]]))
    assert int(pred) == 0 and float(conf) == pytest.approx(2.0 - 1.0) and not bool(flag)


def test_missing_class_in_calibration_data_is_refused() -> None:
    st = ClassStats(3, 2)
    st.update(torch.ones(4, 2), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(CalibrationError, match=r"no calibration samples for classes \['bird'\]"):
        st.check_complete(["cat", "dog", "bird"])


def test_covariance_needs_pooling_for_large_features() -> None:
    with pytest.raises(CalibrationError, match="pool the feature"):
        ClassStats(10, 16384, with_scatter=True)


def test_temperature_fit_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(0, 3, (4000, 5)))
    labels = torch.distributions.Categorical(logits=logits / 2.5).sample()
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.1)


@pytest.mark.parametrize("text,err", [("knn", "exit kind"), ("e2cm:0", "pool"),
                                      ("e2cm:2:vote", "confidence"), ("e2cm:2:margin:x", "parts")])
def test_exit_spec_errors(text: str, err: str) -> None:
    with pytest.raises(ConfigError, match=err):
        ExitSpec.parse(text)


def test_exit_specs_are_selectable_per_exit() -> None:
    from edge_ee.pipeline import FitConfig
    cfg = FitConfig(exit_spec=ExitSpec("e2cm"), exits=(0, 2), exit_at=((1, ExitSpec("lda", 2)),))
    v = cfg.variant(4)
    assert v[0] == ExitSpec("e2cm") and v[1] == ExitSpec("lda", 2) and v[2] == ExitSpec("e2cm")
    assert v[3] is None
    with pytest.raises(ConfigError, match=r"0\.\.3"):
        FitConfig(exit_at=((7, ExitSpec()),)).variant(4)


def test_centred_lda_scores_keep_decisions_and_shrink_magnitudes() -> None:
    """LinearScorer.centered: the same softmax/margin/argmax as W x + b, smaller numbers."""
    from edge_ee.exits.heads import LinearScorer
    g = torch.Generator().manual_seed(0)
    d, k = 64, 10
    x = torch.randn(500, d, generator=g, dtype=torch.float64) * 3 + 40  # large offset, as features are
    # LDA weights μ_k Σ⁻¹ share a large common part; the class-specific part is small
    w = torch.randn(1, d, generator=g, dtype=torch.float64) + 0.1 * torch.randn(
        k, d, generator=g, dtype=torch.float64)
    b = torch.randn(k, generator=g, dtype=torch.float64) * 5
    plain = x @ w.T + b
    centred = LinearScorer.centered(w, b, x.mean(0)).double()
    z = centred.raw(x)
    assert torch.allclose(torch.softmax(z, 1), torch.softmax(plain, 1), atol=1e-5)
    assert torch.equal(z.argmax(1), plain.argmax(1))
    top = plain.topk(2, 1).values
    ztop = z.topk(2, 1).values
    # the scorer stores float32 constants: agreement to float32 rounding
    assert torch.allclose(top[:, 0] - top[:, 1], ztop[:, 0] - ztop[:, 1], atol=1e-3)
    assert z.abs().max() < plain.abs().max() / 3
