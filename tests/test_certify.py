"""Certified thresholds (METHODS §6): the bounds, fixed-sequence testing, a real build, bad input."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import beta

from edge_ee.calibrate import ExitTable
from edge_ee.certify import (
    BOUNDS,
    certify,
    check_levels,
    losses,
    risk_curve,
    samples_needed,
)
from edge_ee.cost import CostTable
from edge_ee.errors import ConfigError
from tests.helpers_cli import run_cli

BIN = Path(sys.executable).parent
BIN_B, HB = BOUNDS["binomial"], BOUNDS["hoeffding_bentkus"]


# ---------------------------------------------------------------- the bound math

def _binom_tail_exact(k: int, n: int, eps: Fraction) -> Fraction:
    return sum((math.comb(n, j) * eps**j * (1 - eps) ** (n - j) for j in range(k + 1)),
               Fraction(0))


@pytest.mark.parametrize("n,k,eps", [(10, 0, "1/10"), (25, 2, "1/20"), (60, 3, "1/50"),
                                     (200, 1, "1/100"), (37, 37, "1/3")])
def test_binomial_p_value_is_the_exact_tail(n: int, k: int, eps: str) -> None:
    e = Fraction(eps)
    assert BIN_B.p_value(k / n, n, float(e)) == pytest.approx(float(_binom_tail_exact(k, n, e)),
                                                              rel=1e-9, abs=1e-300)


def test_hoeffding_bentkus_is_never_tighter_and_p_values_are_monotone() -> None:
    for n in (50, 230, 1000, 5000):
        for eps in (0.005, 0.01, 0.05, 0.2):
            ks = range(0, min(n, int(3 * eps * n) + 3))
            pb = [BIN_B.p_value(k / n, n, eps) for k in ks]
            ph = [HB.p_value(k / n, n, eps) for k in ks]
            assert all(h >= b - 1e-12 for h, b in zip(ph, pb, strict=True))
            assert all(0 <= p <= 1 for p in pb + ph)
            assert np.all(np.diff(pb) >= -1e-15) and np.all(np.diff(ph) >= -1e-15)  # ↑ in risk
    # ↓ in ε at fixed risk, and zero risk: both are (1 − ε)^n
    for b in (BIN_B, HB):
        ps = [b.p_value(0.004, 1000, e) for e in (0.005, 0.01, 0.02, 0.05)]
        assert np.all(np.diff(ps) < 0)
        assert b.p_value(0.0, 300, 0.01) == pytest.approx(0.99**300)


def test_upper_bound_is_clopper_pearson_and_ordered() -> None:
    for n, k in ((1000, 5), (230, 0), (5000, 40), (100, 99)):
        cp = beta.ppf(0.9, k + 1, n - k)
        assert BIN_B.upper_bound(k / n, n, 0.1) == pytest.approx(cp, abs=1e-7)
        assert HB.upper_bound(k / n, n, 0.1) >= BIN_B.upper_bound(k / n, n, 0.1) - 1e-9
    ubs = [BIN_B.upper_bound(0.005, n, 0.1) for n in (500, 1000, 4000, 20000)]
    assert np.all(np.diff(ubs) < 0) and ubs[-1] > 0.005  # shrinks towards the risk
    assert BIN_B.upper_bound(1.0, 50, 0.1) == 1.0


def test_samples_needed_known_values() -> None:
    # (1 − 0.01)^229 = 0.1003 > 0.1 ≥ 0.99^230 = 0.0993
    assert samples_needed(0.01, 0.1, "binomial") == 230
    assert samples_needed(0.01, 0.1, "hoeffding_bentkus") == 230
    assert samples_needed(0.05, 0.05) == math.ceil(math.log(0.05) / math.log(0.95))
    n = samples_needed(0.01, 0.1, "binomial", risk=0.005)
    assert BIN_B.p_value(0.005, n, 0.01) <= 0.1 < BIN_B.p_value(0.005, n - 40, 0.01)
    assert samples_needed(0.01, 0.1, "hoeffding_bentkus", 0.005) > n
    assert samples_needed(0.01, 0.1, risk=0.02) is None


def test_binomial_p_value_is_valid_by_simulation() -> None:
    """At the null boundary E[L] = ε, P(p ≤ δ) ≤ δ (and not far below: it is exact)."""
    rng = np.random.default_rng(0)
    n, eps, delta = 400, 0.02, 0.1
    k = rng.binomial(n, eps, size=20000)
    rej = np.array([BIN_B.p_value(kk / n, n, eps) <= delta for kk in np.unique(k)])
    frac = rej[np.searchsorted(np.unique(k), k)].mean()
    assert 0.04 < frac <= delta + 0.006


@pytest.mark.parametrize("eps,delta", [(0.0, 0.1), (1.0, 0.1), (-0.1, 0.1), (0.01, 0.0),
                                       (0.01, 1.0), (0.01, 2.0)])
def test_levels_outside_open_unit_interval(eps: float, delta: float) -> None:
    with pytest.raises(ConfigError, match="must be in \\(0, 1\\)"):
        check_levels(eps, delta)


# ---------------------------------------------------------------- fixed-sequence testing

def _one_exit_table(n: int = 1000) -> ExitTable:
    """One exit + final; the final classifier is always right; the exit's confidence
    decides which samples leave; sample i's exit prediction is wrong iff `wrong[i]`."""
    labels = np.zeros(n, np.int64)
    conf = np.linspace(0.0, 1.0, n, endpoint=False).astype(np.float32)
    wrong = np.zeros(n, bool)
    wrong[(conf > 0.5) & (conf <= 0.6)] = True  # a band of exit errors in the middle
    pred = np.vstack([np.where(wrong, 1, 0), labels])
    conf2 = np.vstack([conf, np.full(n, np.inf, np.float32)])
    return ExitTable(pred, conf2, labels, CostTable((10,), 90, (1,)), np.ones(2, bool))


def test_losses_are_full_right_and_exit_wrong() -> None:
    t = _one_exit_table()
    assert losses(t, [np.inf]).sum() == 0
    assert losses(t, [0.6]).sum() == 0  # conf > 0.6 leave: all right at the exit
    assert losses(t, [0.55]).sum() == 50  # half the wrong band (0.5, 0.6] leaves
    assert losses(t, [-1.0]).sum() == 100  # everyone leaves; 100 of them wrong at the exit


def test_fixed_sequence_stops_at_the_first_failure() -> None:
    t = _one_exit_table()
    full = t.evaluate(np.array([np.inf]))
    safe1, safe2 = t.evaluate(np.array([0.8])), t.evaluate(np.array([0.6]))  # zero loss
    risky = t.evaluate(np.array([0.5]))  # 100 losses of 1000 → fails at ε = 0.02
    # the walk certifies safe1, safe2, fails at risky, never looks at the later safe point
    c = certify(t, [full, safe1, safe2, risky, safe1], 0.02, 0.1)
    assert c.certified and c.index == 2 and c.tested == 3
    assert c.point.thresholds == safe2.thresholds and c.empirical_risk == 0.0
    assert c.risk_upper_bound == pytest.approx(beta.ppf(0.9, 1, 1000))
    # a failure first: nothing certified, even though cheaper safe points follow
    c = certify(t, [full, risky, safe1, safe2], 0.02, 0.1)
    assert not c.certified and c.tested == 1 and c.point is None
    # the first saving's risk (0.1) is ≥ ε, so the least any certificate needs is reported
    assert c.samples_needed == samples_needed(0.02, 0.1, "binomial", 0.0) == 114
    # only the full network: nothing to test
    c = certify(t, [full], 0.02, 0.1)
    assert not c.certified and c.tested == 0
    js = certify(t, [full, safe1], 0.02, 0.1, "hoeffding_bentkus").to_json()
    assert set(js) == {"epsilon", "delta", "bound", "n", "certified", "tested", "point",
                       "empirical_risk", "risk_upper_bound", "samples_needed"}
    assert js["bound"] == "hoeffding_bentkus" and js["point"]["thresholds"] == [0.8]


def test_refine_path_inserts_between_one_exit_steps() -> None:
    from edge_ee.calibrate import greedy_path, refine_path
    t = _one_exit_table()
    coarse = greedy_path(t, candidates=6)
    fine = refine_path(t, coarse, 4)
    assert len(fine) > len(coarse) and all(p in fine for p in coarse)
    assert [fine.index(p) for p in coarse] == sorted(fine.index(p) for p in coarse)
    thr = [p.thresholds[0] for p in fine]
    assert all(b < a for a, b in itertools.pairwise(thr))  # still most conservative first
    assert refine_path(t, coarse, 0) == coarse


def test_risk_curve_thinned_with_band() -> None:
    t = _one_exit_table()
    path = [t.evaluate(np.array([v])) for v in np.linspace(1.0, -0.01, 200)]
    curve = risk_curve(t, path, 0.1)
    assert 2 <= len(curve) <= 60 and curve[-1][0] == path[-1].cost_fraction
    assert all(ub >= r for _, r, ub in curve)
    assert curve[-1][1] == pytest.approx(0.1)
    assert all(ub is None for *_, ub in risk_curve(t, path, None))


# ---------------------------------------------------------------- real builds (CLI subprocess)

def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli("edge-ee", *args, timeout=300)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    head = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(head + np.ascontiguousarray(arr, np.uint8).tobytes())


@pytest.fixture(scope="module")
def small_fashion(tmp_path_factory, data_dir: Path) -> tuple[Path, object, object]:
    """A real Fashion-MNIST folder: 3000 random training and 1500 random test images."""
    from edge_ee.calib_source import balanced_subset
    from edge_ee.data import load_fashion_mnist
    tr = load_fashion_mnist("train", data_dir / "fashion-mnist")
    te = load_fashion_mnist("test", data_dir / "fashion-mnist")
    tr, _ = balanced_subset(tr, 3000, seed=1)
    te, _ = balanced_subset(te, 1500, seed=1)
    d = tmp_path_factory.mktemp("fmnist")
    for prefix, s in (("train", tr), ("t10k", te)):
        _write_idx(d / f"{prefix}-images-idx3-ubyte.gz", s.images[..., 0])
        _write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", s.labels.astype(np.uint8))
    return d, tr, te


@pytest.mark.shared_data
def test_build_with_calib_data_is_certified(small_fashion, tmp_path: Path) -> None:
    d, _, _ = small_fashion
    out = tmp_path / "b"
    r = _cli("build", "--model", "fashion-cnn", "--data", str(d), "--out", str(out),
             "--calib-data", "test", "--calib-samples", "1000", "--max-drop", "0.02",
             "--delta", "0.1", "--batch-size", "500")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "certified: drop ≤ 0.02" in r.stderr and "500 remain" in r.stderr
    assert "TRAINING" not in r.stderr  # calibration data given: no fallback warning
    m = json.loads((out / "manifest.json").read_text())
    cal = m["calibration"]
    c = cal["certificate"]
    assert set(c) == {"epsilon", "delta", "bound", "n", "certified", "tested", "point",
                      "empirical_risk", "risk_upper_bound", "samples_needed"}
    assert (c["epsilon"], c["delta"], c["bound"], c["n"]) == (0.02, 0.1, "binomial", 1000)
    assert c["certified"] and c["tested"] >= 1 and c["samples_needed"] >= 114  # 0.98^114 ≤ 0.1
    assert c["empirical_risk"] <= c["risk_upper_bound"] <= 0.02
    assert c["risk_upper_bound"] == pytest.approx(
        beta.ppf(0.9, round(c["empirical_risk"] * 1000) + 1, 1000 - round(c["empirical_risk"] * 1000)),
        abs=1e-6)
    assert c["point"]["cost_fraction"] < 1.0 and c["point"] == cal["point"]
    src = cal["source"]
    assert src["kind"] == "calib-data" and src["n"] == 1000 and src["warning"] is None
    assert len(src["sha256"]) == 64 and cal["test_split"]["n"] == 500
    assert cal["guarantee"].startswith("certified")
    curve = cal["risk_curve"]
    assert 2 <= len(curve) <= 60 and curve[0][:2] == [1.0, 0.0]
    assert all(ub >= rk for _, rk, ub in curve)
    # the exported exits carry the certified thresholds
    thr = {s["exit"]["exit_index"]: s["exit"]["threshold"] for s in m["segments"]
           if s["exit"]["kind"] != "final"}
    assert thr and all(c["point"]["thresholds"][i] == pytest.approx(v) for i, v in thr.items())


@pytest.mark.shared_data
def test_too_small_calibration_sample_exports_the_full_network(small_fashion,
                                                               tmp_path: Path) -> None:
    d, _, _ = small_fashion
    r = _cli("build", "--model", "fashion-cnn", "--data", str(d), "--out", str(tmp_path / "b"),
             "--calib-data", "test", "--calib-samples", "100", "--max-drop", "0.01",
             "--delta", "0.1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "at least 230 samples are needed" in r.stderr and "full network" in r.stderr
    assert "Traceback" not in r.stderr
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    c = m["calibration"]["certificate"]
    assert not c["certified"] and c["samples_needed"] == 230 and c["n"] == 100
    assert c["point"] is None and len(m["segments"]) == 1
    assert m["calibration"]["source"]["kind"] == "calib-data"
    # no --calib-data, a 5 % training hold-out (150): the fallback warning, then the same
    r = _cli("build", "--model", "fashion-cnn", "--data", str(d), "--out", str(tmp_path / "c"),
             "--calib-fraction", "0.05", "--max-drop", "0.01", "--delta", "0.1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "WARNING: thresholds are calibrated on a held-out part of the TRAINING" in r.stderr
    cal = json.loads((tmp_path / "c" / "manifest.json").read_text())["calibration"]
    assert cal["source"]["kind"] == "train-holdout" and cal["source"]["n"] == 150
    assert "TRAINING" in cal["source"]["warning"] and not cal["certificate"]["certified"]


@pytest.mark.shared_data
def test_training_holdout_fallback_warns_and_says_uncertified(fashion, fashion_fitted) -> None:
    from edge_ee.pipeline import FitConfig, calibration_record, evaluate_split
    net, fitted = fashion_fitted
    assert fitted.source["kind"] == "train-holdout" and fitted.source["n"] == 300
    assert "TRAINING" in fitted.source["warning"]
    assert any("held-out part of the TRAINING split" in m for m in fitted.messages)
    test = evaluate_split(net, fitted.heads, fashion[1], fitted.costs, progress=False)
    cal = calibration_record(fitted, FitConfig(max_drop=0.02), test)
    assert cal["certificate"] is None and cal["guarantee"].startswith("uncertified")
    assert cal["source"] == fitted.source
    assert all(ub is None for *_, ub in cal["risk_curve"])


@pytest.mark.shared_data
def test_bad_calibration_input_is_refused_before_any_pass(small_fashion, tmp_path: Path) -> None:
    from edge_ee.build import prepare_calibration
    from edge_ee.errors import EdgeEEError
    from edge_ee.pipeline import FitConfig
    d, tr, te = small_fashion
    bad_labels = tmp_path / "bad_labels.npz"
    np.savez(bad_labels, x=te.images[:300],
             y=np.where(np.arange(300) % 50 == 0, 12, te.labels[:300]))
    bad_names = tmp_path / "bad_names.npz"
    np.savez(bad_names, x=te.images[:300], y=te.labels[:300],
             classes=np.array([*te.classes[:9], "Hat"]))
    same = tmp_path / "same.npz"
    np.savez(same, x=tr.images, y=tr.labels)
    mixed = tmp_path / "mixed.npz"
    np.savez(mixed, x=np.concatenate([te.images[:400], tr.images[:7]]),
             y=np.concatenate([te.labels[:400], tr.labels[:7]]))
    shape = tmp_path / "shape.npz"
    np.savez(shape, x=np.zeros((5, 32, 32, 3), np.uint8), y=np.zeros(5, np.int64))
    cases = [(dict(calib_data=str(bad_labels)), "labels \\[12\\] are classes the model lacks"),
             (dict(calib_data=str(bad_names)), "the model lacks \\['Hat'\\]"),
             (dict(calib_data=str(same)), "identical to the statistics"),
             (dict(calib_data=str(mixed)), "7 of 407 calibration samples are also in"),
             (dict(calib_data=str(shape)), "resize them first"),
             (dict(calib_data=str(tmp_path / "nope.npz")), "no such file"),
             (dict(calib_data="train"), "statistics data itself"),
             (dict(calib_samples=50), "--calib-samples needs --calib-data")]
    for kw, msg in cases:
        with pytest.raises(EdgeEEError, match=msg):
            prepare_calibration(FitConfig(**kw), "fashion-cnn", tr, te)
    for kw, msg in ((dict(delta=1.5), "--delta must be in \\(0, 1\\)"),
                    (dict(delta=0.1, max_drop=0.0), "--max-drop must be in \\(0, 1\\)"),
                    (dict(delta=0.1, budget=0.5), "drop --budget"),
                    (dict(delta=0.1, bound="chernoff"), "bound must be one of")):
        with pytest.raises(ConfigError, match=msg):
            FitConfig(**kw)
    # through the real command line: exit code 2, the message, no traceback, nothing written
    for extra, msg in ((["--calib-data", str(bad_labels)], "classes the model lacks"),
                       (["--delta", "1.5"], "--delta must be in (0, 1)")):
        r = _cli("build", "--model", "fashion-cnn", "--data", str(d), "--out",
                 str(tmp_path / "b"), *extra)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "b").exists()
