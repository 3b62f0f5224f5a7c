"""Device-measured overheads vs the host default, repeatability, int8-consistent thresholds
(issue 15 items 3-4 evidence), side by side in one run.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. .venv/bin/python benchmarks/bench_overheads.py \
        --model fashion-resnet --exit lda:2 --out bench-out/overheads-fashion
    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. .venv/bin/python benchmarks/bench_overheads.py \
        --model ../shared/data/resnet-cifar10/resnet20.npz --data ../shared/data/cifar10-jpeg.zip \
        --exit lda:2 --out bench-out/overheads-resnet20

1. Exits fitted once (a class-balanced `--fit-samples` training sample; thresholds chosen
   and checked on a class-balanced `--calib-samples` half of the test split, evaluated on
   the rest), then a **candidates bundle** (`export(..., candidates=True)`, every exit a
   candidate) and `edge-ee-run BUNDLE --measure-overheads` in a subprocess (torch-free,
   1 onnxruntime thread): the device-measured overhead file of this machine.
2. Kept exits when the threshold search charges (a) that file, (b) the host's own
   measurement (`edge_ee.boundary`), three times, without hysteresis, (c) the host
   default with hysteresis (`edge_ee.hysteresis`, fresh kept-measurement folder), three
   times, as three repeated `--latency-aware` builds do.
3. With the device costs charged: an fp32 bundle with int8 files whose thresholds are
   chosen on the int8 chain's own scores, and one whose int8 files copy the fp32
   thresholds (the old way). `edge-ee-run` on the held-out test images (fp32, int8 own,
   int8 fp32-thresholds): accuracy, measured FLOPs fraction against what calibration
   promised, and exit agreement with fp32.
The load average is printed with every timing figure; timings are ratios measured
interleaved in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load() -> str:
    return "load " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def _run(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "device_runners.cli", *args], env=env,
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"edge-ee-run failed: {r.stderr[-3000:]}")


def _choose(fitted, cfg, flops):
    from edge_ee.pipeline import choose_thresholds
    for h in fitted.heads:
        if h is not None:
            h.set_threshold(float("inf"))
    point = choose_thresholds(fitted, replace(cfg, exit_overhead_flops=tuple(flops)),
                              progress=False)
    return [i for i, h in enumerate(fitted.heads) if h is not None and h.enabled], point


def _measured(bundle: Path, results: Path) -> dict:
    m = json.loads((bundle / "manifest.json").read_text())
    s = json.loads(results.read_text())["samples"]
    seg = np.asarray(s["exit"])
    cum = np.cumsum([g["flops"] for g in m["segments"]])
    full = m["cost"]["full_flops"]
    return {"accuracy": float((np.asarray(s["prediction"]) == np.asarray(s["label"])).mean()),
            "cost_fraction": float(cum[seg].mean() / full), "seg": seg,
            "exit_points": [g["exit"].get("exit_index") for g in m["segments"]],
            "pred": np.asarray(s["prediction"])}


def main() -> None:
    import torch

    from edge_ee.boundary import measure_boundaries
    from edge_ee.build import load_model, prepare_calibration
    from edge_ee.candidates import candidate_identity
    from edge_ee.data import atomic_save_npz, balanced_indices
    from edge_ee.exits import ExitSpec
    from edge_ee.hysteresis import stable_boundaries
    from edge_ee.int8_calibration import threshold_hook
    from edge_ee.overheads import device_overheads
    from edge_ee.pipeline import FitConfig, evaluate_split, export, fit_exits

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fashion-resnet")
    p.add_argument("--data", default=None)
    p.add_argument("--exit", default="lda:2")
    p.add_argument("--fit-samples", type=int, default=12000)
    p.add_argument("--calib-samples", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("bench-out/overheads"))
    a = p.parse_args()
    torch.set_num_threads(2)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"start: {_load()}", flush=True)
    net, train, test, source = load_model(a.model, a.data)
    train = train.subset(balanced_indices(train.labels, a.fit_samples, 0))
    cfg = FitConfig(exit_spec=ExitSpec.parse(a.exit), calib_fraction=0.25, calib_data="test",
                    calib_samples=a.calib_samples, max_drop=0.01)
    calib, rest, _ = prepare_calibration(cfg, a.model, train, test)
    fitted = fit_exits(net, train, cfg, progress=False, choose=False, calib_data=calib)
    costs = fitted.costs
    print(f"fitted {net.name} {a.exit}: {sum(h is not None for h in fitted.heads)} exits, "
          f"full {costs.full_flops / 1e6:.1f} MFLOPs, {time.perf_counter() - t0:.0f} s", flush=True)

    # 1. the candidates bundle and the device's own measurement
    cand = a.out / "candidates"
    export(net, fitted.heads, cand, rest, f"{net.name}-candidates", None, source,
           overwrite=True, candidates=True)
    ovh = a.out / "overheads.json"
    print(f"measure-overheads: {_load()}", flush=True)
    _run(str(cand), "--measure-overheads", "--out", str(ovh), "--profile", "none", "--quiet")
    print(f"  after: {_load()}", flush=True)
    dev_flops, dev_rec = device_overheads(ovh, candidate_identity(net, fitted.heads, costs),
                                          costs.head_flops)
    doc = json.loads(ovh.read_text())
    rows = {}
    kept, point = _choose(fitted, cfg, dev_flops)
    rows["device file"] = (dev_rec["fraction"], kept, point)
    # 2. the host: plain measurement, then with hysteresis (fresh folder), `repeats` times
    for r in range(a.repeats):
        print(f"host measurement {r + 1}: {_load()}", flush=True)
        m = measure_boundaries(net, fitted.heads, costs.full_flops, costs.head_flops)
        kept, point = _choose(fitted, cfg, m.overhead_flops)
        rows[f"host, plain #{r + 1}"] = (list(m.raw_fraction), kept, point)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["EDGE_EE_BOUNDARY_CACHE"] = cache
        for r in range(a.repeats):
            print(f"host default (hysteresis) {r + 1}: {_load()}", flush=True)
            m = stable_boundaries(net, fitted.heads, costs.full_flops, costs.head_flops)
            kept, point = _choose(fitted, cfg, m.overhead_flops)
            rows[f"host default #{r + 1}" + (" (kept)" if m.hysteresis["kept_previous"]
                                             else "")] = (list(m.fraction), kept, point)
    exits = [i for i, h in enumerate(fitted.heads) if h is not None]
    print(f"\nfull network {doc['full_latency_us']:.1f} us on the device runner "
          f"({doc['rounds']} rounds)")
    print("| charged costs | boundary fraction per exit " + str(exits) +
          " | kept exits | calib cost | calib acc |")
    print("|---|---|---|---|---|")
    for name, (frac, kept, point) in rows.items():
        fr = " ".join(f"{frac[i]:.3f}" for i in exits)
        print(f"| {name} | {fr} | {kept} | {point.cost_fraction:.3f} | {point.accuracy:.4f} |")
    print("device head us: " + " ".join(f"{e['exit_index']}:{e['head_us']:.1f}"
                                         for e in doc["exits"]))

    # 3. int8: own thresholds vs copied fp32 thresholds, with the device costs charged
    kept, point32 = _choose(fitted, cfg, dev_flops)
    fitted.chosen = point32
    fitted.config = replace(cfg, exit_overhead_flops=tuple(dev_flops))
    hook = threshold_hook(fitted, cfg, train.subset(_holdout(train, cfg)), calib, kept)
    own, copy = a.out / "int8-own", a.out / "int8-fp32thr"
    common = {"overwrite": True, "int8": True, "calibration_data": train}
    rec = {"point": point32.to_json(), "exit_overhead": dev_rec}
    export(net, fitted.heads, own, rest, f"{net.name}-int8own", rec, source,
           int8_thresholds=hook, **common)
    from edge_ee.errors import EdgeEEError
    try:  # the old way can fail int8 validation (ResNet-56: 93.75 % end-to-end agreement)
        export(net, fitted.heads, copy, rest, f"{net.name}-int8fp32", rec, source, **common)
    except EdgeEEError as err:
        print(f"int8 with fp32 thresholds: not built ({err})", flush=True)
        copy = None
    idx = balanced_indices(rest.labels, len(rest), 0)
    atomic_save_npz(a.out / "eval.npz", x=rest.images[idx], y=rest.labels[idx])
    res = {}
    for name, b, backend in (("fp32", own, "onnxruntime"), ("int8, own thresholds", own,
                             "onnxruntime-int8"), ("int8, fp32 thresholds", copy,
                                                    "onnxruntime-int8")):
        if b is None:
            continue
        out = a.out / f"r-{name.split(',')[0]}-{b.name}.json"
        _run(str(b), "--backend", backend, "--input", str(a.out / "eval.npz"), "--out",
             str(out), "--profile", "none", "--idle-s", "0", "--quiet")
        res[name] = _measured(b, out)
    q = json.loads((own / "manifest.json").read_text())["quantization"]["formats"]
    t8 = q["onnx-int8"]["thresholds"]
    promised = {"fp32": point32.cost_fraction, "int8, own thresholds":
                t8["point"]["cost_fraction"], "int8, fp32 thresholds": point32.cost_fraction}
    promised_acc = {"fp32": point32.accuracy, "int8, own thresholds": t8["point"]["accuracy"],
                    "int8, fp32 thresholds": point32.accuracy}
    table = evaluate_split(net, fitted.heads, rest, costs, progress=False)
    ref = res["fp32"]
    print(f"\nint8 vs fp32 on the {len(idx)} held-out test images (kept exits {kept}; torch "
          f"fp32 on them: accuracy {table.evaluate(np.asarray(point32.thresholds)).accuracy:.4f}"
          f", full network {table.full_accuracy:.4f})")
    print("| bundle | accuracy | measured cost | calibrated cost | |measured - calib| | "
          "calib acc | exit agreement with fp32 | exit+prediction agreement |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in res.items():
        agree = float((r["seg"] == ref["seg"]).mean())
        both = float(((r["seg"] == ref["seg"]) & (r["pred"] == ref["pred"])).mean())
        print(f"| {name} | {r['accuracy']:.4f} | {r['cost_fraction']:.3f} | "
              f"{promised[name]:.3f} | {abs(r['cost_fraction'] - promised[name]):.3f} | "
              f"{promised_acc[name]:.4f} | {agree:.4f} | {both:.4f} |")
    print(f"int8 own thresholds: {t8['thresholds']} (fp32 {t8['fp32_thresholds']}); on the "
          f"calibration split: same exit as fp32 {t8['agreement_with_fp32']['exit']:.4f}")
    summary = {"model": net.name, "exit": a.exit, "overheads_file": str(ovh),
               "rows": {k: {"fraction": v[0], "kept": v[1], "cost": v[2].cost_fraction,
                            "accuracy": v[2].accuracy} for k, v in rows.items()},
               "int8": {k: {"accuracy": v["accuracy"], "cost_fraction": v["cost_fraction"],
                            "promised_cost": promised[k]} for k, v in res.items()},
               "seconds": time.perf_counter() - t0, "load_end": os.getloadavg()}
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\ndone in {time.perf_counter() - t0:.0f} s; {_load()}")


def _holdout(train, cfg):
    from edge_ee.data import split_indices
    return split_indices(len(train), cfg.calib_fraction, cfg.seed)[1]


if __name__ == "__main__":
    main()
