"""The `If` assembly on its own (no bundle, seconds): two exit segments and a final one,
built here in torch, exported by the project's ONNX call, assembled into one graph and
run on onnxruntime. Each row must stop where the chain's first exit flag says — in
batches that mix exits too — and a threshold override must switch exits off or on.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from converters.errors import ExportValidationError
from converters.formats.onnx import export_graph
from converters.ingraph import assemble, set_threshold
from converters.spec import DynamicAxis
from device_runners.backends import ort_session
from device_runners.strategies import agreement, reference

BATCH = {"x": {0: DynamicAxis("batch", max=65536)}}


class Exit(nn.Module):
    def __init__(self, c_in: int, c: int, threshold: float) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(c_in, c, 3, padding=1), nn.Linear(c, 4)
        self.register_buffer("threshold", torch.tensor(threshold))

    def forward(self, x: torch.Tensor):
        f = torch.relu(self.conv(x))
        z = self.fc(f.mean((2, 3)))
        conf = z.softmax(1).amax(1)
        return f, z.argmax(1), conf, conf > self.threshold


class Final(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc = nn.Linear(c, 4)

    def forward(self, x: torch.Tensor):
        z = self.fc(x.mean((2, 3)))
        return z.argmax(1), z.softmax(1).amax(1), z


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> tuple[list[Path], list[nn.Module]]:
    torch.manual_seed(3)
    mods = [Exit(3, 6, 0.0).eval(), Exit(6, 6, 0.0).eval(), Final(6).eval()]
    outs = _torch_chain(mods, _inputs(64, 0))  # thresholds that let a third stop at each exit
    for m, o in zip(mods[:2], outs, strict=False):
        m.threshold.fill_(float(np.quantile(o["confidence"], 0.6)))
    folder = tmp_path_factory.mktemp("chain")
    x = torch.randn(2, 3, 8, 8)
    paths = []
    for i, m in enumerate(mods):
        outs = ("feature", "prediction", "confidence", "exit") if i < 2 else (
            "prediction", "confidence", "logits")
        paths.append(export_graph(m, (x,), folder / f"seg{i}.onnx", ("x",), outs, BATCH))
        with torch.no_grad():
            x = m(x)[0] if i < 2 else x
    return paths, mods


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def _torch_chain(mods, x: np.ndarray) -> list[dict[str, np.ndarray]]:
    outs, f = [], torch.from_numpy(x)
    names = [("feature", "prediction", "confidence", "exit")] * 2 + [("prediction", "confidence", "logits")]
    with torch.no_grad():
        for m, n in zip(mods, names, strict=True):
            r = m(f)
            outs.append({k: v.numpy() for k, v in zip(n, r, strict=True)})
            f = r[0]
    return outs


@pytest.mark.parametrize("weights", ["branch", "outer"])
def test_if_graph_stops_where_the_chain_does(chain, tmp_path: Path, weights: str) -> None:
    paths, mods = chain
    model = assemble([onnx.load(str(p)) for p in paths], weights)
    inner = model.graph.node[-4].attribute  # the If's branches hold the weights (or not)
    assert [n.op_type for n in model.graph.node].count("If") == 1
    assert any(a.name == "else_branch" for a in inner)
    onnx.save(model, str(tmp_path / "ig.onnx"))
    sess = ort_session(tmp_path / "ig.onnx")
    x = _inputs(64, 0)
    ref = reference(_torch_chain(mods, x), [float(m.threshold) for m in mods[:2]] + [None], 2e-3)
    assert len(set(ref["exit"].tolist())) == 3  # rows stop at every exit
    single = [sess.run(None, {"x": x[n : n + 1]}) for n in range(len(x))]
    got = {k: np.concatenate([s[j] for s in single]) for j, k in enumerate(
        ("prediction", "confidence", "exit"))}
    assert agreement(got, ref, 2e-3)["passed"]
    batch = dict(zip(("prediction", "confidence", "exit"), sess.run(None, {"x": x}), strict=True))
    assert batch["exit"].tolist() == got["exit"].tolist()
    assert batch["prediction"].tolist() == got["prediction"].tolist()


def test_threshold_overrides(chain, tmp_path: Path) -> None:
    paths, _ = chain
    models = [onnx.load(str(p)) for p in paths]
    x = _inputs(16, 1)
    for thr, want in (([math.inf, math.inf], 2), ([-math.inf, None], 0)):
        onnx.save(assemble(models, thresholds=thr), str(tmp_path / "t.onnx"))
        assert (ort_session(tmp_path / "t.onnx").run(None, {"x": x})[2] == want).all()
    onnx.save(set_threshold(models[0], -math.inf), str(tmp_path / "s0.onnx"))
    assert ort_session(tmp_path / "s0.onnx").run(None, {"x": x})[3].all()


def test_refuses_what_it_cannot_assemble(chain) -> None:
    paths, _ = chain
    models = [onnx.load(str(p)) for p in paths]
    with pytest.raises(ExportValidationError, match="at least one exit"):
        assemble(models[-1:])
    with pytest.raises(ExportValidationError, match="weights must be"):
        assemble(models, weights="nowhere")
    with pytest.raises(ExportValidationError, match="need"):
        assemble([models[2], models[2]])
