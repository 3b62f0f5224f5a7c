"""Gathered pixel-exit execution vs the dense masked reference, masked FLOPs.

ONNX bundles and the device runner are tested in test_segmentation_bundle.py.

Uses the shipped weights and real CamVid test images from ../shared/data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edge_ee.data import shared_data_dir
from edge_ee.segmentation.errors import SegmentationError

CAMVID = shared_data_dir() / "camvid-120x160.npz"
NO_DATA = pytest.mark.skipif(
    not CAMVID.is_file(),
    reason=f"real CamVid data not found at {CAMVID} (../shared/data or $EDGE_EE_DATA)")


@pytest.fixture(scope="module")
def setup():
    if not CAMVID.is_file():
        pytest.skip(f"real CamVid data not found at {CAMVID}")
    torch.set_num_threads(1)
    from edge_ee.segmentation.data import load_camvid, normalize_images
    from edge_ee.segmentation.model import load_pretrained

    test = load_camvid(CAMVID, splits=("test",))["test"]
    return load_pretrained(), normalize_images(test.images[[0, 40, 120, 200]])


@pytest.mark.shared_data
@NO_DATA
def test_gathered_equals_dense_masked(setup) -> None:
    from edge_ee.segmentation.pixel_exit import dense_masked_forward, gathered_forward

    model, x = setup
    thr = np.linspace(0.85, 0.99, 11)
    dense = dense_masked_forward(model, torch.from_numpy(x), thr)
    gath = gathered_forward(model, torch.from_numpy(x), thr)
    counts = torch.bincount(dense.exit_index.flatten(), minlength=model.config.num_exits)
    assert (counts > 0).all(), f"want tokens exiting at every exit, got {counts.tolist()}"
    assert torch.equal(dense.exit_index, gath.exit_index)
    torch.testing.assert_close(gath.logits, dense.logits, atol=1e-5, rtol=1e-5)
    # no exits: both equal the plain forward's last exit
    full = dense_masked_forward(model, torch.from_numpy(x), None)
    with torch.no_grad():
        torch.testing.assert_close(full.logits, model(torch.from_numpy(x))[-1], atol=1e-5,
                                   rtol=1e-5)


@pytest.mark.shared_data
@NO_DATA
def test_masked_flops(setup) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from edge_ee.segmentation.pixel_exit import CostModel

    model, x = setup
    cost = CostModel.of(model)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.from_numpy(x[:1]))
    assert cost.full_flops() == fc.get_total_flops()
    e = np.zeros((1, 30, 40), np.int64)  # everything stops at exit 0
    assert cost.flops(e)[0] == cost.stem_flops + cost.dense_flops[0] + 1200 * \
        cost.per_token_flops[0]
    e[0, 0, :10] = model.config.num_exits - 1  # 10 tokens go on to the end
    extra = sum(cost.dense_flops[1:]) + 10 * sum(cost.per_token_flops[1:])
    assert cost.flops(e)[0] == cost.flops(np.zeros((1, 30, 40), np.int64))[0] + extra


def test_bad_thresholds() -> None:
    from edge_ee.segmentation.pixel_exit import check_thresholds

    with pytest.raises(SegmentationError):
        check_thresholds(np.full(10, 0.9), 11)
    with pytest.raises(SegmentationError):
        check_thresholds(np.full(11, 0.0), 11)


def test_weights_sha256_checked(tmp_path: Path) -> None:
    from edge_ee.segmentation.model import WEIGHTS_FILE, load_pretrained

    bad = tmp_path / "w.pt"
    bad.write_bytes(WEIGHTS_FILE.read_bytes() + b"x")
    (tmp_path / "w.pt.sha256").write_text(
        (WEIGHTS_FILE.parent / (WEIGHTS_FILE.name + ".sha256")).read_text())
    with pytest.raises(SegmentationError, match="sha256"):
        load_pretrained(bad)
