"""Confusion matrix and mIoU for semantic segmentation (numpy only; void ignored).

IoU_k = TP_k / (TP_k + FP_k + FN_k); mIoU is the mean over classes whose union is
non-zero (a class absent from both ground truth and prediction is left out, not 0 or 1).
"""

from __future__ import annotations

import numpy as np

from edge_ee.segmentation.data import IGNORE_INDEX, NUM_CLASSES, validate_labels
from edge_ee.segmentation.errors import SegmentationError


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int = NUM_CLASSES,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Rows = ground truth, columns = prediction, int64 (K,K); ignore pixels skipped."""
    pred = np.asarray(pred)
    labels = np.asarray(labels)
    if pred.shape != labels.shape:
        raise SegmentationError(
            f"prediction shape {pred.shape} != label shape {labels.shape}")
    validate_labels(labels, num_classes, ignore_index)
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise SegmentationError(f"predictions must be classes 0..{num_classes - 1}")
    keep = labels != ignore_index
    idx = labels[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU per class from a confusion matrix; NaN where the union is empty."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(conf: np.ndarray) -> float:
    """Mean IoU (in [0,1]) over classes with a non-empty union."""
    iou = iou_per_class(conf)
    if np.all(np.isnan(iou)):
        raise SegmentationError("no labelled pixels: mIoU undefined")
    return float(np.nanmean(iou))
