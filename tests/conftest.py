"""Shared fixtures. Tests marked `shared_data` need the real data in ../shared/data.

They skip, saying why, when that folder is absent (a fresh clone without the data);
CI has it, so there nothing skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EDGE_EE_DATA", ROOT.parent / "shared" / "data"))
HAVE_DATA = (SHARED_DATA / "fashion-mnist").is_dir()
SKIP_REASON = (f"needs the real datasets/weights in {SHARED_DATA} (../shared/data beside the "
               "checkout, or set EDGE_EE_DATA); they are not in this checkout")

os.environ.setdefault("EDGE_EE_DATA", str(SHARED_DATA))


@pytest.fixture(scope="session", autouse=True)
def _boundary_cache(tmp_path_factory) -> None:
    """Kept host boundary measurements (edge_ee.hysteresis) go to a temporary folder, never
    the user's ~/.cache; CLI subprocesses inherit it."""
    os.environ["EDGE_EE_BOUNDARY_CACHE"] = str(tmp_path_factory.mktemp("boundary-cache"))


# fixtures that build bundles (fit + export + validation: 15 s to minutes): every test
# that uses one, directly or through another fixture, is `slow`
SLOW_FIXTURES = {"fashion_bundle", "all_formats_bundle", "int8_bundle", "bundles", "trained",
                 "seg_formats_bundle", "small_seg_bundle", "lm_bundle"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        # `-m "not slow"` replaces the default `-m "not aarch64"`: aarch64 counts as slow
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or "aarch64" in item.keywords:
            item.add_marker(pytest.mark.slow)
    if HAVE_DATA:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def fashion(data_dir: Path):
    """A small real Fashion-MNIST train/test pair (3000 / 500 samples)."""
    from edge_ee.data import load_fashion_mnist
    tr = load_fashion_mnist("train", data_dir / "fashion-mnist")
    te = load_fashion_mnist("test", data_dir / "fashion-mnist")
    rng = np.random.default_rng(0)
    return (tr.subset(np.sort(rng.choice(len(tr), 3000, replace=False))),
            te.subset(np.arange(500)))


@pytest.fixture(scope="session")
def fashion_fitted(fashion):
    """The shipped CNN with E2CM exits fitted and calibrated on the small train subset."""
    from edge_ee.exitnet import from_sequential
    from edge_ee.models.small_cnn import load_small_cnn
    from edge_ee.pipeline import FitConfig, fit_exits
    net = from_sequential(load_small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28), "fashion-cnn")
    fitted = fit_exits(net, fashion[0], FitConfig(max_drop=0.02), progress=False)
    return net, fitted


@pytest.fixture(scope="session")
def fashion_bundle(tmp_path_factory, fashion, fashion_fitted) -> Path:
    from edge_ee.pipeline import export
    net, fitted = fashion_fitted
    out = tmp_path_factory.mktemp("bundles") / "fashion"
    return export(net, fitted.heads, out, fashion[1], "fashion-test",
                  {"point": fitted.chosen.to_json()})


@pytest.fixture(scope="session")
def fashion_samples(tmp_path_factory, fashion) -> Path:
    from edge_ee.data import atomic_save_npz
    p = tmp_path_factory.mktemp("samples") / "test.npz"
    atomic_save_npz(p, x=fashion[1].images[:200], y=fashion[1].labels[:200])
    return p
