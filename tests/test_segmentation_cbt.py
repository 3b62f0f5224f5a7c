"""CBT thresholds (METHODS.md §3) on hand-checkable numbers, α/β checks, absent classes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_ee.errors import EdgeEEError
from edge_ee.segmentation.cbt import CBTConfig, CBTStats, cbt_thresholds, single_thresholds
from edge_ee.segmentation.data import validate_labels
from edge_ee.segmentation.errors import SegmentationError

# p_{n,k}: 2 exits, 3 classes (row k = mean probability vector over pixels of class k).
P_HAND = np.array([
    [[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.3, 0.3, 0.4]],
    [[1.0, 0.0, 0.0], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]],
])


def test_hand_example() -> None:
    # P_0 = [0.9,.05,.05] → T=0.85; P_1 = [.15,.7,.15] → 0.55; P_2 = [.3,.3,.4] → 0.1
    res = cbt_thresholds(P_HAND, CBTConfig(alpha=0.9, beta=0.99))
    np.testing.assert_allclose(res.confidence, [0.85, 0.55, 0.10])
    # class 1: (1 − (0.55 − 0.1)/0.75)·0.09 + 0.9 = 0.4·0.09 + 0.9 = 0.936
    np.testing.assert_allclose(res.thresholds, [0.9, 0.936, 0.99])
    assert res.present.all()


def test_stats_use_all_pixels_of_a_class_and_skip_void() -> None:
    stats = CBTStats(num_exits=1, num_classes=3)
    # 1x4 image: labels 0, 0, 1, void(11); probs per pixel (K=3 channels)
    labels = np.array([[[0, 0, 1, 11]]], dtype=np.uint8)
    probs = np.array([[0.9, 0.5, 0.1, 0.0], [0.1, 0.5, 0.8, 0.0],
                      [0.0, 0.0, 0.1, 1.0]])[None, :, None, :]  # (1,3,1,4)
    stats.update([probs], labels)
    means, present = stats.class_means()
    np.testing.assert_allclose(means[0, 0], [0.7, 0.3, 0.0])  # wrong pixel counted too
    np.testing.assert_allclose(means[0, 1], [0.1, 0.8, 0.1])
    assert present.tolist() == [True, True, False]
    assert np.isnan(means[0, 2]).all()
    assert stats.counts.tolist() == [2, 1, 0]


def test_class_never_present_gets_beta() -> None:
    p = P_HAND.copy()
    p[:, 1] = np.nan  # class 1 has no training pixel
    res = cbt_thresholds(p, CBTConfig(alpha=0.9, beta=0.99))
    assert res.present.tolist() == [True, False, True]
    np.testing.assert_allclose(res.thresholds, [0.9, 0.99, 0.99])


def test_equal_confidence_gives_beta() -> None:
    p = np.tile(np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]]), (2, 1, 1))
    res = cbt_thresholds(p, CBTConfig(alpha=0.5, beta=0.8))
    np.testing.assert_allclose(res.thresholds, [0.8, 0.8, 0.8])


@pytest.mark.parametrize("alpha,beta", [(0.0, 0.9), (0.5, 1.2), (0.99, 0.9), (-0.1, 0.5),
                                        (math.nan, 0.9), (True, 0.9)])
def test_alpha_beta_validation(alpha: float, beta: float) -> None:
    with pytest.raises(SegmentationError):
        CBTConfig(alpha=alpha, beta=beta)
    assert issubclass(SegmentationError, EdgeEEError)


def test_alpha_equals_beta_and_single_threshold() -> None:
    res = cbt_thresholds(P_HAND, CBTConfig(alpha=0.95, beta=0.95))
    np.testing.assert_allclose(res.thresholds, 0.95)
    np.testing.assert_allclose(single_thresholds(0.998, 11), np.full(11, 0.998))
    with pytest.raises(SegmentationError):
        single_thresholds(1.5, 11)


def test_bad_labels_and_shapes() -> None:
    stats = CBTStats(num_exits=1, num_classes=3)
    probs = np.full((1, 3, 2, 2), 1 / 3)
    with pytest.raises(SegmentationError, match="outside classes"):
        stats.update([probs], np.array([[[0, 1], [2, 5]]], dtype=np.uint8))
    with pytest.raises(SegmentationError, match="do not match"):
        stats.update([probs], np.zeros((1, 3, 2), dtype=np.uint8))
    with pytest.raises(SegmentationError, match="exits"):
        stats.update([probs, probs], np.zeros((1, 2, 2), dtype=np.uint8))
    with pytest.raises(SegmentationError, match="spatial size"):
        validate_labels(np.zeros((2, 4, 4), np.uint8), hw=(120, 160))
    with pytest.raises(SegmentationError, match="integer"):
        validate_labels(np.zeros((2, 4, 4), np.float32))
