"""Confusion matrix and mIoU against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from edge_ee.segmentation.errors import SegmentationError
from edge_ee.segmentation.metrics import confusion_matrix, iou_per_class, mean_iou


def test_miou_hand_computed() -> None:
    labels = np.array([[0, 0, 1, 1], [2, 2, 11, 1]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    conf = confusion_matrix(pred, labels, num_classes=4)
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0], expected[0, 1] = 1, 1
    expected[1, 1], expected[1, 0] = 2, 1
    expected[2, 2], expected[2, 0] = 1, 1
    np.testing.assert_array_equal(conf, expected)
    # IoU0 = 1/(1+1+2)=0.25 ; IoU1 = 2/(2+1+1)=0.5 ; IoU2 = 1/(1+1)=0.5 ; class 3 absent
    iou = iou_per_class(conf)
    np.testing.assert_allclose(iou[:3], [0.25, 0.5, 0.5])
    assert np.isnan(iou[3])
    assert mean_iou(conf) == pytest.approx(1.25 / 3)


def test_metric_errors() -> None:
    with pytest.raises(SegmentationError):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), np.uint8))
    with pytest.raises(SegmentationError):
        confusion_matrix(np.zeros((2, 2), int), np.full((2, 2), 12, np.uint8))
    with pytest.raises(SegmentationError):
        mean_iou(np.zeros((3, 3)))
