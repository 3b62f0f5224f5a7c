"""`edge-ee report` on real runs: statistics, energy vs a hand trapezoid, estimated labels,
mismatched bundles refused, the HTML page rendered by headless Chromium."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from device_runners import cli as run_cli
from device_runners.manifest import load_bundle
from device_runners.results import load_results
from edge_ee import cli as ee_cli
from edge_ee.errors import ResultsError
from edge_ee.report import summarize, write_report

pytestmark = pytest.mark.shared_data

# the split strategy: these runs check per-segment statistics (an in-graph run has one call)
RUN_ARGS = ["--strategy", "split", "--idle-s", "0.5", "--min-duration-s", "2.5",
            "--profile", "generic-x86_64", "--power-source", "estimated", "--quiet"]
CHROMIUM = shutil.which("chromium")
CHROMIUM_SKIP = ("needs Debian's headless browser to render the HTML report: "
                 "apt-get install -y --no-install-recommends chromium")


@pytest.fixture(scope="module")
def runs(fashion_bundle: Path, fashion_samples: Path, tmp_path_factory) -> dict[str, Path]:
    """Two real runs of the exit-split bundle: with exits, and with exits ignored."""
    out = tmp_path_factory.mktemp("runs")
    paths = {"early-exit": out / "ee.json", "no-exit": out / "noexit.json"}
    for name, path in paths.items():
        extra = ["--no-exit"] if name == "no-exit" else []
        code = run_cli.main([str(fashion_bundle), "--input", str(fashion_samples), "--out",
                             str(path), *RUN_ARGS, *extra])
        assert code == 0
    return paths


@pytest.fixture(scope="module")
def report_dir(runs: dict[str, Path], fashion_bundle: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    code = ee_cli.main(["report", str(runs["early-exit"]), str(runs["no-exit"]), "--bundle",
                        str(fashion_bundle), "--names", "early-exit", "no-exit", "--out", str(out)])
    assert code == 0
    return out


def _summary(runs: dict[str, Path], bundle: Path, name: str = "early-exit") -> tuple[dict, dict]:
    res = load_results(runs[name])
    return res, summarize(res, load_bundle(bundle))


def test_statistics_of_a_real_run(runs, fashion_bundle):
    res, s = _summary(runs, fashion_bundle)
    smp = res["samples"]
    n = len(smp["exit"])
    assert s["samples"] == n > 200  # several passes over the 200 images (>= 2.5 s)
    assert s["accuracy"] == pytest.approx(np.mean(np.array(smp["prediction"]) ==
                                                  np.array(smp["label"])))
    assert sum(s["exit_histogram"].values()) == n
    lat = [sum(v) for v in smp["segment_latency_ns"]]
    assert s["latency_ns"]["p50"] == pytest.approx(np.percentile(lat, 50))
    assert s["latency_ns"]["p99"] == pytest.approx(np.percentile(lat, 99))
    bundle = load_bundle(fashion_bundle)
    cum = np.cumsum([seg["flops"] for seg in bundle.segments])
    assert s["expected_flops"] == pytest.approx(cum[np.array(smp["exit"])].mean())
    assert s["cost_fraction"] == pytest.approx(s["expected_flops"] / s["full_flops"])
    # every segment's latencies count only the samples that reached it
    reached = [sum(1 for e in smp["exit"] if e >= i) for i in range(len(bundle.segments))]
    assert [st.get("count", 0) for st in s["segment_latency_ns"]] == reached
    # throughput against the generic-x86_64 profile (896 GFLOP/s fp32, 51.2 GB/s)
    tp = s["throughput"]
    assert (tp["precision"], tp["peak_gflops"], tp["bandwidth_gbps"]) == ("fp32", 896.0, 51.2)
    seg0 = tp["segments"][0]
    assert seg0["achieved_gflops"] == pytest.approx(bundle.segments[0]["flops"] /
                                                    s["segment_latency_ns"][0]["p50"])
    assert seg0["pct_of_peak"] == pytest.approx(100 * seg0["achieved_gflops"] / 896.0)
    assert seg0["bytes_estimated"] > 4 * bundle.segments[0]["params"]
    assert "series" in s and len(s["series"]["latency_ns"]) == n


def _hand_trapezoid_mj(t_ns: list[int], p_mw: list[float], a: int, b: int) -> float:
    """Energy over [a, b] with linear interpolation at both edges, written out by hand."""
    pts = sorted(zip(t_ns, p_mw, strict=True))

    def at(x: int) -> float:
        for (t0, p0), (t1, p1) in itertools.pairwise(pts):
            if t0 <= x <= t1:
                return p0 + (p1 - p0) * (x - t0) / (t1 - t0) if t1 > t0 else p0
        raise AssertionError(f"{x} outside the samples")

    xs = [a, *[t for t, _ in pts if a < t < b], b]
    ys = [at(a), *[p for t, p in pts if a < t < b], at(b)]
    total = 0.0
    for i in range(1, len(xs)):
        total += (ys[i] + ys[i - 1]) / 2 * (xs[i] - xs[i - 1]) / 1e9  # mW x s = mJ
    return total


def test_energy_matches_a_hand_trapezoid(runs, fashion_bundle):
    res, s = _summary(runs, fashion_bundle)
    power, e = res["power"], s["energy"]
    good = [(t, p) for t, p in zip(power["timestamp_ns"], power["total_mw"], strict=True)
            if p is not None]
    a, b = power["window_ns"]
    hand = _hand_trapezoid_mj([t for t, _ in good], [p for _, p in good], a, b)
    n = len(res["samples"]["exit"])
    idle_mw = power["idle"]["idle_power_mw"]
    assert e["energy_mj"] == pytest.approx(hand, rel=1e-9)
    assert e["n_inferences"] == n
    assert e["duration_ns"] == b - a
    assert e["energy_per_inference_mj"] == pytest.approx(hand / n, rel=1e-9)
    above = hand - idle_mw * (b - a) / 1e9
    assert e["above_idle_energy_mj"] == pytest.approx(above, rel=1e-9, abs=1e-9)
    assert e["above_idle_energy_per_inference_mj"] == pytest.approx(above / n, rel=1e-9,
                                                                    abs=1e-12)
    assert e["is_estimate"] and e["label"] == "estimated" and e["source"] == "estimated"


def test_estimated_label_in_markdown_html_and_csv(report_dir: Path):
    md = (report_dir / "report.md").read_text()
    assert "Power is ESTIMATED" in md and "(estimated)" in md
    html = (report_dir / "report.html").read_text()
    assert "ESTIMATED" in html and "class='est'" in html
    assert html.count("data:image/png;base64,") >= 5
    assert "http://" not in html and "https://" not in html and "<script" not in html
    with open(report_dir / "tables" / "energy.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["early-exit", "no-exit"]
    assert all(r["power_label"] == "estimated" for r in rows)
    with open(report_dir / "tables" / "overview.csv", newline="") as f:
        overview = {r[0]: r[1:] for r in csv.reader(f)}
    assert all("(estimated)" in v for v in overview["energy / sample (mJ)"])
    for name in ("overview", "latency_segments", "exits", "energy", "throughput",
                 "operating_points"):
        assert (report_dir / "tables" / f"{name}.csv").is_file()
        assert json.loads((report_dir / "tables" / f"{name}.json").read_text())["rows"]
    for fig in ("latency", "exits", "energy", "metric_cost", "metric_latency", "throughput",
                "power"):
        assert (report_dir / "figures" / f"{fig}.png").stat().st_size > 5000
    rep = json.loads((report_dir / "report.json").read_text())
    assert set(rep) == {"early-exit", "no-exit"} and "series" not in rep["early-exit"]
    # exits ignored: every sample pays every segment, exit heads included (> the plain net)
    assert rep["no-exit"]["cost_fraction"] > 1.0
    assert rep["no-exit"]["cost_fraction"] >= rep["early-exit"]["cost_fraction"]


def _other_bundle(bundle: Path, dest: Path, **calibration: object) -> Path:
    """A copy of `bundle` whose manifest differs (so its manifest hash differs)."""
    shutil.copytree(bundle, dest)
    m = json.loads((dest / "manifest.json").read_text())
    m["model"]["name"] += "-other"
    m["calibration"] = {**(m.get("calibration") or {}), **calibration}
    (dest / "manifest.json").write_text(json.dumps(m))
    return dest


def test_results_of_another_bundle_are_refused(runs, fashion_bundle, tmp_path, capsys):
    other = _other_bundle(fashion_bundle, tmp_path / "other")
    with pytest.raises(ResultsError, match="pass the bundle that was run"):
        summarize(load_results(runs["early-exit"]), load_bundle(other))
    code = ee_cli.main(["report", str(runs["early-exit"]), "--bundle", str(other), "--out",
                        str(tmp_path / "rep")])
    assert code != 0 and "pass the bundle that was run" in capsys.readouterr().err
    assert not (tmp_path / "rep" / "report.html").exists()


def test_calibration_curve_from_the_manifest(runs, fashion_bundle, tmp_path):
    # the format pipeline.calibration_record writes: {split: [[cost_fraction, accuracy], ...]}
    curve = {"calibration": [[1.0, 0.90], [0.4, 0.80], [0.7, 0.88]],
             "test": [[1.0, 0.89], [0.5, 0.85]]}
    other = load_bundle(_other_bundle(fashion_bundle, tmp_path / "b", curve=curve))
    res = load_results(runs["early-exit"])
    res["bundle"]["manifest_sha256"] = other.manifest_sha256  # as if run with `other`
    s = summarize(res, other)
    curves = s["calibration"]["curves"]
    assert [p["cost_fraction"] for p in curves["calibration"]] == [0.4, 0.7, 1.0]
    assert [p["accuracy"] for p in curves["test"]] == [0.85, 0.89]
    write_report([s], ["ee"], tmp_path / "rep", html=False)
    with open(tmp_path / "rep" / "tables" / "calibration_curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["split"] for r in rows] == ["calibration"] * 3 + ["test"] * 2
    assert (tmp_path / "rep" / "figures" / "metric_cost.png").is_file()
    assert not (tmp_path / "rep" / "report.html").exists()


@pytest.mark.skipif(CHROMIUM is None, reason=CHROMIUM_SKIP)
@pytest.mark.slow
def test_html_report_renders_in_headless_chromium(report_dir: Path, tmp_path: Path):
    from PIL import Image
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1280,2000", (report_dir / "report.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert shot.is_file(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr}"
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2000, 1280)
    colours = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"only {len(colours)} colours: blank page?"
    not_white = (img < 240).any(axis=2).mean()
    assert not_white > 0.05, f"only {not_white:.1%} of the page is not white"
    # the estimated-power banner (#fde8ea) and the header bar (#23395d) are on screen
    assert (np.abs(img.astype(int) - [0x23, 0x39, 0x5D]).sum(axis=2) < 10).mean() > 0.01
    assert (np.abs(img.astype(int) - [0xFD, 0xE8, 0xEA]).sum(axis=2) < 10).mean() > 0.005


CERTIFICATE = {"epsilon": 0.02, "delta": 0.05, "bound": 0.0183, "n": 5000, "certified": True,
               "tested": 12, "point": {"cost_fraction": 0.61, "accuracy": 0.885},
               "empirical_risk": 0.008, "risk_upper_bound": 0.0183, "samples_needed": 3100}
RISK_CURVE = [[1.0, 0.0, 0.004], [0.8, 0.003, 0.009], [0.6, 0.008, 0.0183],
              [0.45, 0.021, 0.033]]
SOURCE = {"kind": "train-holdout", "n": 5000, "sha256": "ab" * 32,
          "warning": "calibration samples overlap the class-mean statistics split"}


def _as_run_with(other: Path, runs: dict[str, Path], name: str = "early-exit") -> dict:
    bundle = load_bundle(other)
    res = load_results(runs[name])
    res["bundle"]["manifest_sha256"] = bundle.manifest_sha256  # as if run with `other`
    return summarize(res, bundle)


def test_certificate_risk_curve_and_source_shown_when_present(runs, fashion_bundle, tmp_path):
    other = _other_bundle(fashion_bundle, tmp_path / "b", certificate=CERTIFICATE,
                          risk_curve=RISK_CURVE, source=SOURCE,
                          full_accuracy={"test": 0.905})
    s = _as_run_with(other, runs)
    cal = s["calibration"]
    assert cal["certificate"] == CERTIFICATE and cal["source"] == SOURCE
    assert [p["cost_fraction"] for p in cal["risk_curve"]] == [0.45, 0.6, 0.8, 1.0]
    assert cal["risk_curve"][1] == {"cost_fraction": 0.6, "empirical_risk": 0.008,
                                    "upper_bound": 0.0183}
    write_report([s], ["ee"], tmp_path / "rep")
    rep = tmp_path / "rep"
    with open(rep / "tables" / "certificate.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["bound"]) == 0.0183 and row["certified"] == "True"
    # the certified bound beside the measured drop (manifest's full-network test accuracy)
    assert float(row["measured_drop"]) == pytest.approx(0.905 - s["accuracy"])
    with open(rep / "tables" / "risk_curve.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (rep / "figures" / "risk.png").stat().st_size > 5000
    md, html = (rep / "report.md").read_text(), (rep / "report.html").read_text()
    warning = f"ee: calibration data: {SOURCE['warning']}"
    assert f"- warning: {warning}" in md and warning in html
    assert "Certified risk bound" in md and "Certified risk bound" in html
    assert "certified drop bound (calibration, upper)" in md and "≤ 0.0183 (" in md


def test_nothing_certified_is_shown_when_absent(runs, fashion_bundle, tmp_path):
    s = _summary(runs, fashion_bundle)[1]
    assert s["calibration"]["certificate"] is None and s["calibration"]["risk_curve"] == []
    write_report([s], ["ee"], tmp_path / "rep")
    assert not (tmp_path / "rep" / "tables" / "certificate.csv").exists()
    assert not (tmp_path / "rep" / "figures" / "risk.png").exists()
    text = (tmp_path / "rep" / "report.md").read_text() + (tmp_path / "rep" /
                                                           "report.html").read_text()
    assert "ertif" not in text and "calibration data:" not in text


def test_uncertified_bound_is_a_warning(runs, fashion_bundle, tmp_path):
    other = _other_bundle(fashion_bundle, tmp_path / "b",
                          certificate={**CERTIFICATE, "certified": False, "bound": 0.031})
    s = _as_run_with(other, runs)
    write_report([s], ["ee"], tmp_path / "rep", html=False)
    assert "risk bound is NOT certified" in (tmp_path / "rep" / "report.md").read_text()


def test_short_window_no_empty_energy_chart_and_same_warnings(fashion_bundle, fashion_samples,
                                                              tmp_path):
    """A window too short for energy per inference: no energy figure (no empty axis), and
    the Markdown and the HTML carry the same warnings."""
    out = tmp_path / "short.json"
    assert run_cli.main([str(fashion_bundle), "--input", str(fashion_samples), "--out", str(out),
                         "--idle-s", "0.3", "--min-duration-s", "0", "--profile",
                         "generic-x86_64", "--power-source", "estimated", "--quiet"]) == 0
    s = summarize(load_results(out), load_bundle(fashion_bundle))
    assert s["energy"] is not None and s["energy"]["energy_per_inference_mj"] is None
    write_report([s], ["short"], tmp_path / "rep")
    rep = tmp_path / "rep"
    assert not (rep / "figures" / "energy.png").exists()
    assert (rep / "figures" / "power.png").is_file()
    md, html = (rep / "report.md").read_text(), (rep / "report.html").read_text()
    warns = [ln[len("- warning: "):] for ln in md.splitlines() if ln.startswith("- warning: ")]
    assert any("shorter than" in w for w in warns)
    from html import escape
    assert all(escape(w) in html for w in warns)
    powers = [ln for ln in md.splitlines() if ln.startswith("- power, ")]
    assert len(powers) == 1 and len(powers[0]) < 200 and "ESTIMATED" in powers[0]


def test_metric_registry_picks_by_task_and_refuses_unknown():
    from edge_ee.report.metrics import METRICS, metric_for
    assert {"accuracy", "miou", "next_token_accuracy"} <= set(METRICS)
    assert metric_for({"model": {"task": "classification"}}).name == "accuracy"
    assert metric_for({"model": {"task": "clustering"}}).name == "accuracy"
    assert metric_for({"model": {}}).name == "accuracy"
    assert metric_for({"model": {"task": "segmentation"}}).name == "miou"
    lm = metric_for({"model": {"task": "language-model"}})  # the task LM bundles write
    assert (lm.name, lm.granularity, lm.unit) == ("next_token_accuracy", "position", "token")
    assert metric_for({"model": {"task": "segmentation", "task_metric": "accuracy"}}).name == \
        "accuracy"
    with pytest.raises(ResultsError, match="no report metric for task 'speech'"):
        metric_for({"model": {"task": "speech"}})
    with pytest.raises(ResultsError, match="known: "):
        metric_for({"model": {"task_metric": "bleu"}})


def test_tick_labels_are_thinned_at_many_segments():
    from edge_ee.report.plots import MAX_TICKS, thin
    assert thin(6) == list(range(6))
    for n in (13, 26, 27, 60):
        keep = thin(n)
        assert keep[0] == 0 and keep[-1] == n - 1 and len(keep) <= MAX_TICKS + 1
        assert keep == sorted(set(keep))
