"""ExitNet adapters: equal to the original model, and clear errors for bad cut points."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_ee.errors import ModelError
from edge_ee.exitnet import ExitNet, from_module, from_resnet_cifar, from_sequential
from edge_ee.models.resnet_cifar import CifarResNet
from edge_ee.models.small_cnn import small_cnn


@pytest.mark.parametrize("depth", [20, 32])
def test_resnet_adapter_any_depth(depth: int) -> None:
    m = CifarResNet(depth).eval()
    net = from_resnet_cifar(m)
    x = torch.randn(3, 3, 32, 32)
    assert net.num_exits == (depth - 2) // 2
    torch.testing.assert_close(net(x), m(x))
    assert net.feature_shapes()[-1] == (64, 8, 8)


def test_sequential_and_fx_adapters_match_the_model() -> None:
    m = small_cnn().eval()
    x = torch.randn(2, 1, 28, 28)
    seq = from_sequential(m, [0, "2", 4], (1, 28, 28))
    torch.testing.assert_close(seq(x), m(x))
    r = CifarResNet(20).eval()
    fx = from_module(r, ["layer1.2", "layer2.1"], (3, 32, 32))
    y = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fx(y), r(y))
    assert [f.shape[1] for f in fx.features(y)] == [16, 32]


def test_bad_cut_points() -> None:
    r = CifarResNet(20).eval()
    with pytest.raises(ModelError, match="not a submodule"):
        from_module(r, ["layer9.0"], (3, 32, 32))
    with pytest.raises(ModelError, match="single-tensor boundary"):
        from_module(r, ["layer1.0.conv1"], (3, 32, 32))
    with pytest.raises(ModelError, match="forward\\(\\) order"):
        from_module(r, ["layer2.0", "layer1.0"], (3, 32, 32))
    with pytest.raises(ModelError, match="not a child"):
        from_sequential(small_cnn(), ["conv"], (1, 28, 28))
    with pytest.raises(ModelError, match="out of range"):
        from_sequential(small_cnn(), [5], (1, 28, 28))
    with pytest.raises(ModelError, match="granularity"):
        ExitNet(list(r.layer1), nn.Identity(), ["a", "b", "c"], (16, 32, 32), granularity="voxel")


@pytest.mark.shared_data
@pytest.mark.slow
def test_latency_aware_fit_charges_each_exit_its_measured_boundary(fashion) -> None:
    """--latency-aware: the boundary cost is measured per exit on this machine (exports and
    onnxruntime sessions, no stubs), charged in the search, and recorded."""
    from edge_ee.exitnet import from_sequential
    from edge_ee.models.small_cnn import load_small_cnn
    from edge_ee.pipeline import FitConfig, calibration_record, evaluate_split, fit_exits
    net = from_sequential(load_small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28), "fashion-cnn")
    fitted = fit_exits(net, fashion[0], FitConfig(max_drop=0.02, exits=(1, 3), latency_aware=True),
                       progress=False)
    ov = fitted.config.exit_overhead_flops
    assert len(ov) == net.num_exits and ov[0] == ov[2] == ov[4] == 0.0
    # a boundary costs more than nothing and less than the whole network
    assert all(0.0 < ov[i] < fitted.costs.full_flops for i in (1, 3))
    rec = calibration_record(fitted, FitConfig(), evaluate_split(net, fitted.heads, fashion[1],
                                                                 fitted.costs, progress=False))
    assert rec["latency_aware"] is True and list(rec["exit_overhead_flops"]) == list(ov)
