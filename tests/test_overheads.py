"""Device-measured exit overheads, end to end through both CLIs (real builds, real
onnxruntime timing): `edge-ee build --candidates` → `edge-ee-run --measure-overheads` →
`edge-ee build --overheads FILE`, the typed refusals, and the host's hysteresis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_runners.manifest import sha256_file
from tests.helpers_cli import run_cli
from tests.helpers_data import needs_fashion, write_fashion_folder

pytestmark = [pytest.mark.shared_data, needs_fashion]


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> dict[str, Path]:
    """A small real Fashion-MNIST folder, a candidates bundle and its measured overheads."""
    from edge_ee.calib_source import balanced_subset
    from edge_ee.data import load_fashion_mnist
    from tests.helpers_data import SHARED_DATA
    tr = load_fashion_mnist("train", SHARED_DATA / "fashion-mnist")
    te = load_fashion_mnist("test", SHARED_DATA / "fashion-mnist")
    root = tmp_path_factory.mktemp("overheads")
    data = write_fashion_folder(root / "fm", balanced_subset(tr, 3000, seed=1)[0],
                                balanced_subset(te, 1000, seed=1)[0])
    cand = root / "cand"
    r = run_cli("edge-ee", "-q", "build", "--model", "fashion-cnn", "--data", str(data), "--out",
             str(cand), "--candidates", "--batch-size", "500")
    assert r.returncode == 0, r.stderr[-3000:]
    ovh = root / "ovh.json"
    r = run_cli("edge-ee-run", str(cand), "--measure-overheads", "--out", str(ovh),
             "--overhead-rounds", "60", "--overhead-min-s", "0.3", "--profile", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "exit 0: boundary" in r.stderr
    return {"data": data, "cand": cand, "ovh": ovh, "root": root}


@pytest.mark.slow
def test_measure_overheads_file(flow) -> None:
    doc = json.loads(flow["ovh"].read_text())
    m = json.loads((flow["cand"] / "manifest.json").read_text())
    assert doc["kind"] == "edge-ee-overheads" and doc["schema_version"] == 2
    assert doc["bundle"]["manifest_sha256"] == sha256_file(flow["cand"] / "manifest.json")
    assert doc["identity"] == m["candidates"]["identity"]
    assert [e["exit_index"] for e in doc["exits"]] == [0, 1, 2, 3, 4]
    dev = doc["device"]
    assert dev["backend"] == "onnxruntime" and dev["runtime"].startswith("onnxruntime ")
    assert dev["threads"] == 1 and dev["machine"] and dev["profile"] is None
    assert doc["rounds"] >= 60 and doc["full_latency_us"] > 0
    lo, hi = doc["full_latency_us_iqr"]
    assert lo <= doc["full_latency_us"] <= hi
    for e in doc["exits"]:
        assert e["head_us"] > 0 and e["head_us_iqr"][0] <= e["head_us"] <= e["head_us_iqr"][1]
        q25, q75 = e["probe_fraction_iqr"]
        assert q25 <= e["probe_fraction"] <= q75
        assert e["probe_fraction_se"] == pytest.approx(
            (q75 - q25) / 1.349 * 1.2533 / doc["rounds"] ** 0.5)
        # the probe's own fraction is the measured median; others are corrected by head time
        if e["probe"] == e["exit_index"]:
            assert e["boundary_fraction"] == pytest.approx(e["probe_fraction"])
        assert e["boundary_us"] == pytest.approx(e["boundary_fraction"] * doc["full_latency_us"])
        # the in-graph strategy's cost of the same exit, measured on its own probe file
        g25, g75 = e["ingraph_probe_fraction_iqr"]
        assert g25 <= e["ingraph_probe_fraction"] <= g75
        assert e["ingraph_fraction"] - e["ingraph_probe_fraction"] == pytest.approx(
            e["boundary_fraction"] - e["probe_fraction"])
    for g in m["candidates"]["groups"]:  # assembled by the writer, listed and hashed
        assert g["ingraph"] == f"cand_b{g['probe']}_ingraph.onnx" and g["ingraph"] in m["files"]
    assert doc["protocol"]["block"] == 5
    # the candidates bundle is still an ordinary bundle: it runs samples
    r = run_cli("edge-ee-run", str(flow["cand"]), "--out", str(flow["root"] / "res.json"),
             "--profile", "none", "--idle-s", "0", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow
def test_build_charges_the_device_file(flow) -> None:
    out = flow["root"] / "dev"
    r = run_cli("edge-ee", "-q", "build", "--model", "fashion-cnn", "--data", str(flow["data"]),
             "--out", str(out), "--overheads", str(flow["ovh"]), "--batch-size", "500")
    assert r.returncode == 0, r.stderr[-3000:]
    cal = json.loads((out / "manifest.json").read_text())["calibration"]
    rec = cal["exit_overhead"]
    doc = json.loads(flow["ovh"].read_text())
    assert rec["source"] == "device" and rec["sha256"] == sha256_file(flow["ovh"])
    assert rec["bundle_manifest_sha256"] == doc["bundle"]["manifest_sha256"]
    full = doc["identity"]["full_flops"]
    # auto charges the in-graph cost the file has (what an ONNX bundle runs under a bound)
    assert rec["strategy"] == "ingraph"
    want = [max(0.0, e["ingraph_fraction"] * full - x["head_flops"])
            for e, x in zip(doc["exits"], doc["identity"]["exits"], strict=True)]
    assert cal["exit_overhead_flops"] == pytest.approx(want)
    assert "candidates" not in json.loads((out / "manifest.json").read_text())


@pytest.mark.slow
def test_bad_overheads_are_typed_errors(flow, tmp_path: Path) -> None:
    # a bundle without candidates: nothing to measure
    r = run_cli("edge-ee-run", str(flow["root"] / "dev"), "--measure-overheads", "--out",
             str(tmp_path / "x.json"), "--profile", "none")
    assert r.returncode == 2 and "--candidates" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.json").exists()
    base = ["build", "--model", "fashion-cnn", "--data", str(flow["data"]), "--batch-size", "500"]
    # corrupt (truncated) file, a results file, a tampered number: refused before any pass
    raw = flow["ovh"].read_text()
    bad = {"corrupt.json": raw[: len(raw) // 2], "results.json": (flow["root"] / "res.json")
           .read_text()}
    doc = json.loads(raw)
    doc["exits"][1]["boundary_fraction"] = "0.1"
    bad["tampered.json"] = json.dumps(doc)
    for name, text in bad.items():
        p = tmp_path / name
        p.write_text(text)
        r = run_cli("edge-ee", *base, "--out", str(tmp_path / name[:-5]), "--overheads", str(p))
        assert r.returncode == 2, (name, r.stderr[-2000:])
        assert "--overheads" in r.stderr and "measure-overheads" in r.stderr, r.stderr[-1000:]
        assert "Traceback" not in r.stderr and not (tmp_path / name[:-5]).exists()
    # other exits than the file measured
    r = run_cli("edge-ee", *base, "--exits", "0,1", "--out", str(tmp_path / "m"),
             "--overheads", str(flow["ovh"]))
    assert r.returncode == 2 and "other candidate exits" in r.stderr, r.stderr[-2000:]
    assert "exits [0, 1, 2, 3, 4]" in r.stderr and "--candidates" in r.stderr
    assert not (tmp_path / "m").exists()
    # another model, another head: the same check, in-process
    from edge_ee.errors import EdgeEEError
    from edge_ee.overheads import device_overheads
    want = json.loads(raw)["identity"]
    heads = tuple(e["head_flops"] for e in want["exits"])
    assert device_overheads(flow["ovh"], want, heads)[1]["source"] == "device"
    for edit, says in ((("model", "fashion-resnet"), "model is 'fashion-cnn' in the file"),
                       (("full_flops", 1), "full_flops is")):
        with pytest.raises(EdgeEEError, match=says):
            device_overheads(flow["ovh"], {**want, edit[0]: edit[1]}, heads)
    # a schema-1 file (before in-graph probes) still reads: auto charges the split it has,
    # asking for the in-graph cost is a typed error saying how to get one
    v1 = json.loads(raw)
    v1["schema_version"] = 1
    for e in v1["exits"]:
        for k in [k for k in e if k.startswith("ingraph")]:
            del e[k]
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    assert device_overheads(tmp_path / "v1.json", want, heads)[1]["strategy"] == "split"
    with pytest.raises(EdgeEEError, match=r"no in-graph measurements.*--charge-strategy split"):
        device_overheads(tmp_path / "v1.json", want, heads, "ingraph")
    split = device_overheads(flow["ovh"], want, heads, "split")[1]
    assert split["strategy"] == "split"
    assert split["fraction"] == split["by_strategy"]["split"]["raw_fraction"]
    other = json.loads(json.dumps(want))
    other["exits"][2]["kind"] = "lda"
    with pytest.raises(EdgeEEError, match="exit 2: kind is 'e2cm' in the file, 'lda' here"):
        device_overheads(flow["ovh"], other, heads)


@pytest.mark.slow  # ~13 s of CPU: data load, statistics, one real boundary measurement
def test_host_hysteresis_keeps_or_replaces(tmp_path: Path, monkeypatch) -> None:
    """A kept measurement is charged while the new one lies in its band, replaced otherwise."""
    from edge_ee.boundary import BoundaryProtocol
    from edge_ee.cost import cost_table
    from edge_ee.exitnet import from_sequential
    from edge_ee.exits import ExitSpec
    from edge_ee.exits.fit import build_heads, fit_statistics
    from edge_ee.hysteresis import cache_dir, keep_or_replace, stable_boundaries
    from edge_ee.models.small_cnn import load_small_cnn
    from tests.helpers_data import fashion_subset
    monkeypatch.setenv("EDGE_EE_BOUNDARY_CACHE", str(tmp_path))
    net = from_sequential(load_small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28), "fashion-cnn")
    variant = [None, ExitSpec.parse("lda:2"), None, ExitSpec.parse("lda:2"), None]
    (stats,) = fit_statistics(net, [variant], fashion_subset(300, 10)[0], 300, False)
    heads = build_heads(stats, variant)
    costs = cost_table(net, heads)
    full, hf = costs.full_flops, costs.head_flops
    proto = BoundaryProtocol(rounds=40, warmup_rounds=5, min_duration_s=0.1)
    first = stable_boundaries(net, heads, full, hf, proto)  # one real measurement
    assert first.hysteresis["kept_previous"] is False
    assert cache_dir() == tmp_path
    (kept,) = list(tmp_path.glob("*.json"))
    rec = json.loads(kept.read_text())
    assert rec["raw_fraction"] == list(first.raw_fraction)
    assert first.std_error[1] > 0 and first.std_error[0] == 0
    # a wide band: the kept (here: edited) fractions are charged, whatever was measured now
    rec["fraction"] = [0.0, 0.5, 0.0, 0.3, 0.0]
    rec["std_error"] = [1.0] * 5
    kept.write_text(json.dumps(rec))
    again = keep_or_replace(first, kept, heads, full, hf)
    assert again.hysteresis["kept_previous"] is True
    assert again.fraction == (0.0, 0.5, 0.0, 0.3, 0.0)
    assert again.overhead_flops[1] == pytest.approx(0.5 * full - hf[1])
    assert again.to_json()["hysteresis"]["kept_previous"] is True
    # within max(2·grid, 4·se) of the kept raw value: kept; just beyond it: replaced
    shift = 1.95 * proto.grid  # just inside 2·grid
    rec.update(raw_fraction=[0.0, first.raw_fraction[1] + shift, 0.0,
                             first.raw_fraction[3] - shift, 0.0], std_error=[0.0] * 5)
    kept.write_text(json.dumps(rec))
    if max(first.std_error) * 4 < shift:
        assert keep_or_replace(first, kept, heads, full, hf).hysteresis["kept_previous"]
    rec.update(raw_fraction=[0.0, 9.0, 0.0, 9.0, 0.0])
    kept.write_text(json.dumps(rec))
    third = keep_or_replace(first, kept, heads, full, hf)
    assert third.hysteresis["kept_previous"] is False and third.fraction == first.fraction
    assert json.loads(kept.read_text())["raw_fraction"] == list(first.raw_fraction)
    # an unreadable kept file is ignored and replaced
    kept.write_text("{not json")
    fourth = keep_or_replace(first, kept, heads, full, hf)
    assert fourth.hysteresis["kept_previous"] is False and json.loads(kept.read_text())
