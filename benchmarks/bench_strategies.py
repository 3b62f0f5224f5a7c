"""Split segments vs in-graph (ONNX `If`) exits, side by side in one run (issue 15 item 1).

    EDGE_EE_BOUNDARY_CACHE=bench-out/strategies/boundaries OMP_WAIT_POLICY=PASSIVE \
    PYTHONPATH=. .venv/bin/python benchmarks/bench_strategies.py \
        [--models fashion,resnet56] [--samples 1000] [--probe] [--block 25] [--reuse] \
        [--no-int8] [--out bench-out/strategies]

Per model — the demo network `fashion-resnet` with its `lda:2` exits (what `edge-ee demo`
builds, host-measured boundary costs), and ResNet-56 / CIFAR-10 with `lda:2` exits fitted
on a class-balanced 5000-image training sample, thresholds latency-aware at ≤ 1 point
drop on 2000 class-balanced test images, both under the default worst-case bound
(`--max-overhead auto`: the kept exits' charged costs, in the strategy `auto` runs, sum to
≤ 0.05 of the full network; recorded per model under `charges`) — it exports the exit
bundle (ONNX with in-graph exits, and TFLite) and the monolithic graph, then measures on
one runtime thread:
* accuracy and FLOPs fraction of each strategy on the whole 10000-image test split (the
  decisions the device makes, batched through the runner's own executors);
* p50 latency of every variant on a class-balanced `--samples` test sample, interleaved
  in blocks of `--block` samples (each variant's weights warm, as on a device running one
  bundle; `--block 1`: sample by sample), as a fraction of the monolithic graph on the
  same runtime:
  split and in-graph exits (ONNX), split exits (TFLite), and each with every exit off
  (split: `no_exit`; in-graph: thresholds +inf assembled into the same graph);
* the same for int8 (`--int8`, default on): ONNX int8 split and in-graph
  (`ingraph.int8.onnx`), TFLite int8 split, each with exits on and off, as fractions of the
  int8 monolithic graph of the same format; per int8 variant its accuracy against fp32,
  its whole-test cost against what its own calibration promised (thresholds chosen on
  its own scores, `edge_ee.int8_calibration`), and its exit agreement with the fp32 split;
* bundle sizes by precision and strategy (what `--strategies split` leaves out);
* what `edge-ee-run --strategy auto` chooses on this machine, per precision.
`--probe` adds the first probe's question on ResNet-56 (one exit after stage 2, exit never
/ always taken): why is `If` slower, by graph form (weights inside each branch or captured
from the outer scope, as `torch.cond` exports) and session settings (optimisation level,
the NCHWc layout transformer off), plus a flat graph that computes the head without `If`.
The machine is shared: only ratios measured side by side are reported, with the load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def interleave(runs: dict[str, Callable[[np.ndarray], object]], x: np.ndarray,
               block: int = 25, warmup: int = 5) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall ns and median CPU ns (process time) per sample of each callable,
    interleaved in blocks of `block` samples: each variant runs a block in turn (order
    alternating), so every variant runs with its own weights warm in cache as on a device
    that runs one bundle, and all of them share the machine's load alike. block=1
    interleaves sample by sample. CPU time leaves out the time the process waited for a
    core, which on a shared machine inflates long and many-call runs (see docs/ingraph.md)."""
    names = list(runs)
    for k in names:
        for n in range(warmup):
            runs[k](x[n : n + 1])
    t: dict[str, list[int]] = {k: [] for k in names}
    c: dict[str, list[int]] = {k: [] for k in names}
    for j, s in enumerate(range(0, len(x), block)):
        for k in (names if j % 2 == 0 else names[::-1]):
            runs[k](x[s : s + 1])  # the block's first call re-warms this variant
            for i in range(s, min(s + block, len(x))):
                v = x[i : i + 1]
                t0, c0 = time.perf_counter_ns(), time.process_time_ns()
                runs[k](v)
                c[k].append(time.process_time_ns() - c0)
                t[k].append(time.perf_counter_ns() - t0)
    return ({k: float(np.median(v)) for k, v in t.items()},
            {k: float(np.median(v)) for k, v in c.items()})


def whole_split(bundle, backend, fn, x, y, bs: int = 256) -> dict[str, float]:
    """Accuracy and FLOPs fraction of a strategy's decisions on every test image."""
    ex, pr = [], []
    for s in range(0, len(x), bs):
        o = fn(bundle, backend, x[s : s + bs])
        ex.append(o.exit)
        pr.append(o.prediction)
    e, p = np.concatenate(ex), np.concatenate(pr)
    cum = np.cumsum([s["flops"] for s in bundle.segments])
    return {"accuracy": float((p == y).mean()),
            "flops_fraction": float(cum[e].mean() / bundle.manifest["cost"]["full_flops"]),
            "exit_histogram": np.bincount(e, minlength=len(cum)).tolist(),
            "exit": e.tolist(), "prediction": p.tolist()}


def int8_options(fitted, train, int8: bool, calib=None) -> tuple[dict, dict]:
    """export() options of the exit bundle and of the monolithic one: int8 files calibrated
    on `train` (the split the exits were fitted on), the exit bundle's thresholds on the
    int8 files' own scores (the one path `edge-ee build --int8` takes)."""
    if not int8:
        return {}, {}
    from edge_ee.int8_calibration import int8_thresholds_for
    hook, _ = int8_thresholds_for(fitted, "own", train, calib)
    return ({"int8": True, "calibration_data": train, "int8_thresholds": hook},
            {"int8": True, "calibration_data": train})


#: the fitted exits of each model built in this run: their bound and charges go in the JSON
_BUILT: dict = {}


def charges(fitted) -> dict:
    """The worst-case bound, what the kept exits are charged and how it was measured."""
    eo = fitted.exit_overhead or {}
    return {"overhead_bound": fitted.overhead, "strategy_charged": eo.get("strategy"),
            "fraction": eo.get("fraction"), "by_strategy": eo.get("by_strategy"),
            "hysteresis": eo.get("hysteresis"), "chosen": fitted.chosen.to_json()}


def build_fashion(out: Path, formats: tuple[str, ...], reuse: bool = False, int8: bool = True):
    from edge_ee.data import balanced_indices, load_fashion_mnist
    from edge_ee.demo import DemoConfig, build_demo
    from edge_ee.pipeline import export
    if reuse and (out / "fashion-ee").is_dir():
        return None, None, out / "fashion-ee", out / "fashion-full", load_fashion_mnist("test")
    cfg = DemoConfig(out=str(out / "fashion-demo"))
    b = build_demo(cfg)
    _BUILT["fashion"] = b.fitted
    fit_train = b.train.subset(balanced_indices(b.train.labels, cfg.fit_samples, cfg.fit.seed))
    q_ee, q_full = int8_options(b.fitted, fit_train, int8)
    ee = export(b.net, b.fitted.heads, out / "fashion-ee", b.test, "fashion-resnet-ee",
                None, overwrite=True, formats=formats, **q_ee)
    full = export(b.net, b.fitted.heads, out / "fashion-full", b.test, "fashion-resnet-full",
                  None, monolithic=True, overwrite=True, formats=formats, **q_full)
    return b.net, b.fitted.heads, ee, full, b.test


def build_resnet56(out: Path, formats: tuple[str, ...], reuse: bool = False,
                   int8: bool = True):
    from edge_ee.data import balanced_indices, load_cifar10_jpeg, shared_data_dir
    from edge_ee.exitnet import from_resnet_cifar
    from edge_ee.exits import ExitSpec
    from edge_ee.models.resnet_cifar import load_resnet_cifar
    from edge_ee.pipeline import FitConfig, export, fit_exits
    if reuse and (out / "resnet56-ee").is_dir():
        return None, None, out / "resnet56-ee", out / "resnet56-full", load_cifar10_jpeg("test")
    net = from_resnet_cifar(load_resnet_cifar(str(shared_data_dir() / "resnet-cifar10/resnet56.npz")))
    train, test = load_cifar10_jpeg("train"), load_cifar10_jpeg("test")
    sub = train.subset(balanced_indices(train.labels, 5000, 0))
    # thresholds chosen on 2000 class-balanced test images the backbone never saw (the
    # README's --calib-data test), so the 1-point drop holds on new data; the worst-case
    # bound is the default for latency-aware builds (--max-overhead auto = 0.05)
    calib = test.subset(balanced_indices(test.labels, 2000, 1))
    fitted = fit_exits(net, sub, FitConfig(exit_spec=ExitSpec.parse("lda:2"), max_drop=0.01,
                                           latency_aware=True), progress=False,
                       calib_data=calib)
    _BUILT["resnet56"] = fitted
    q_ee, q_full = int8_options(fitted, sub, int8, calib)
    ee = export(net, fitted.heads, out / "resnet56-ee", test, "resnet56-ee", None,
                overwrite=True, formats=formats, **q_ee)
    full = export(net, fitted.heads, out / "resnet56-full", test, "resnet56-full", None,
                  monolithic=True, overwrite=True, formats=formats, **q_full)
    return net, fitted.heads, ee, full, test


BACKENDS = {"onnx": "onnxruntime", "tflite": "tflite", "onnx-int8": "onnxruntime-int8",
            "tflite-int8": "tflite-int8"}


def bundle_sizes(ee: Path) -> dict:
    """Bytes of the exit bundle by what they hold: each format's segment files, each
    in-graph file, the rest (golden, manifest); and the ONNX bundle with / without in-graph."""
    import json as _json
    m = _json.loads((ee / "manifest.json").read_text())
    size = {p.name: p.stat().st_size for p in ee.iterdir()}
    out: dict = {"segments": {}, "ingraph": {}}
    for fmt in m["segments"][0]["files"]:
        out["segments"][fmt] = sum(size[s["files"][fmt]] for s in m["segments"])
    for fmt, name in ((m.get("strategies") or {}).get("ingraph") or {}).get("files", {}).items():
        out["ingraph"][fmt] = size[name]
    ingraph_files = ((m.get("strategies") or {}).get("ingraph") or {}).get("files", {})
    used = {*(n for s in m["segments"] for n in s["files"].values()), *ingraph_files.values()}
    out["other"] = sum(v for k, v in size.items() if k not in used)
    out["total"] = sum(size.values())
    out["total_without_ingraph"] = out["total"] - sum(out["ingraph"].values())
    for fmt in ("onnx", "onnx-int8"):
        if fmt in out["ingraph"]:
            seg = out["segments"][fmt]
            out[f"{fmt}_with_ingraph_over_without"] = (seg + out["ingraph"][fmt]) / seg
    return out


def measure_model(name: str, ee: Path, full: Path, test, samples: int, tmp: Path,
                  tflite: bool, block: int = 25) -> dict:
    from converters.ingraph import exits_off, write_ingraph
    from device_runners.backends import open_backend, ort_session
    from device_runners.executor import execute
    from device_runners.manifest import load_bundle
    from device_runners.strategies import INGRAPH, available, choose, execute_ingraph
    from edge_ee.data import balanced_indices
    b, f = load_bundle(ee), load_bundle(full)
    fmts = [k for k in BACKENDS if k in b.formats and k in f.formats
            and (tflite or not k.startswith("tflite"))]
    x_all, y_all = test.normalised(), test.labels
    ing = b.manifest["strategies"]["ingraph"]
    res: dict = {"bundle": str(ee), "kept_segments": len(b.segments), "formats": fmts,
                 "ingraph_validation": {"onnx": ing["validation"],
                                        **ing.get("validation_by_format", {})},
                 "ingraph_absent": ing.get("absent", {}), "sizes": bundle_sizes(ee),
                 "whole_test": {}, "auto_choice": {}}
    runs: dict[str, Callable] = {}
    idx = balanced_indices(y_all, samples, 0)
    for fmt in fmts:
        be, fe = open_backend(b, BACKENDS[fmt]), open_backend(f, BACKENDS[fmt])
        w = res["whole_test"]
        w[f"{fmt} full"] = whole_split(f, fe, execute, x_all, y_all)
        w[f"{fmt} split"] = whole_split(b, be, execute, x_all, y_all)
        runs[f"{fmt} full"] = lambda v, f=f, fe=fe: execute(f, fe, v)
        runs[f"{fmt} split"] = lambda v, be=be: execute(b, be, v)
        runs[f"{fmt} split, exits off"] = lambda v, be=be: execute(b, be, v, no_exit=True)
        if INGRAPH in available(b, be):
            w[f"{fmt} ingraph"] = whole_split(b, be, execute_ingraph, x_all, y_all)
            off = write_ingraph([ee / s["files"][fmt] for s in b.segments],
                                tmp / f"{name}-{fmt}-off.onnx",
                                thresholds=exits_off(len(b.segments)))
            off_sess = ort_session(off)
            runs[f"{fmt} ingraph"] = lambda v, be=be: execute_ingraph(b, be, v)
            runs[f"{fmt} ingraph, exits off"] = lambda v, s=off_sess: s.run(None, {"x": v})
            _, why = choose(b, be, x_all[idx][:60], "auto")
            res["auto_choice"][fmt] = why
    res["whole_test"]["full_accuracy"] = res["whole_test"]["onnx full"]["accuracy"]
    res["int8"] = int8_record(b, res["whole_test"])
    for r in res["whole_test"].values():  # per-sample lists only for the agreement above
        if isinstance(r, dict):
            r.pop("exit", None)
            r.pop("prediction", None)
    load0 = os.getloadavg()
    med, cpu = interleave(runs, x_all[idx], block)
    res["latency"] = {"samples": len(idx), "block": block, "median_ns": med,
                      "median_cpu_ns": cpu, "load_before": load0, "load_after": os.getloadavg()}
    res["latency"]["p50_fraction_of_monolithic"] = {
        k: v / med[f"{k.split()[0]} full"] for k, v in med.items()}
    res["latency"]["cpu_p50_fraction_of_monolithic"] = {
        k: v / cpu[f"{k.split()[0]} full"] for k, v in cpu.items()}
    res["latency"]["p50_fraction_of_fp32_monolithic"] = {
        k: v / med[f"{k.split()[0].removesuffix('-int8')} full"] for k, v in med.items()}
    return res


def int8_record(b, w: dict) -> dict:
    """Per int8 variant: accuracy vs fp32 (same strategy, same format), whole-test cost vs
    what its own calibration promised, exit agreement with the fp32 split."""
    q = (b.manifest.get("quantization") or {}).get("formats") or {}
    out = {}
    for key, r in w.items():
        fmt, _, strat = key.partition(" ")
        if not fmt.endswith("-int8") or strat == "full" or not isinstance(r, dict):
            continue
        thr = (q.get(fmt) or {}).get("thresholds") or {}
        point = thr.get("point")
        base = w.get(f"{fmt.removesuffix('-int8')} {strat}") or w["onnx split"]
        e32, e8 = np.asarray(w["onnx split"]["exit"]), np.asarray(r["exit"])
        p32, p8 = np.asarray(w["onnx split"]["prediction"]), np.asarray(r["prediction"])
        out[key] = {
            "accuracy": r["accuracy"], "fp32_accuracy": base["accuracy"],
            "accuracy_minus_fp32": r["accuracy"] - base["accuracy"],
            "cost": r["flops_fraction"],
            "calibrated_cost": None if point is None else point["cost_fraction"],
            "cost_minus_calibrated": None if point is None
            else r["flops_fraction"] - point["cost_fraction"],
            "calibrated_accuracy": None if point is None else point["accuracy"],
            "thresholds_source": thr.get("source"),
            "exit_agreement_with_fp32_split": float((e8 == e32).mean()),
            "exit_and_prediction_agreement_with_fp32_split": float(((e8 == e32) & (p8 == p32)).mean()),
        }
    return out


def probe(out: Path, tmp: Path, samples: int, block: int = 25) -> dict:
    """ResNet-56, one exit after stage 2 (layer2.8): graph form and session settings."""
    import onnx
    import onnxruntime as ort
    import torch

    from converters.ingraph import _prefixed, assemble, set_threshold
    from device_runners.backends import ort_session
    from edge_ee.data import balanced_indices, load_cifar10_jpeg, shared_data_dir
    from edge_ee.exitnet import from_resnet_cifar
    from edge_ee.exits import ExitSpec
    from edge_ee.models.resnet_cifar import load_resnet_cifar
    from edge_ee.pipeline import FitConfig, export, fit_exits
    net = from_resnet_cifar(load_resnet_cifar(str(shared_data_dir() / "resnet-cifar10/resnet56.npz")))
    train, test = load_cifar10_jpeg("train"), load_cifar10_jpeg("test")
    fitted = fit_exits(net, train.subset(balanced_indices(train.labels, 2000, 0)),
                       FitConfig(exit_spec=ExitSpec.parse("lda:2"), exits=(17,), max_drop=1.0),
                       progress=False)
    heads = [h if i == 17 else None for i, h in enumerate(fitted.heads)]
    with torch.no_grad():
        heads[17].set_threshold(0.5)
    ee = export(net, heads, out / "probe-ee", test, "probe", None, overwrite=True)
    full = export(net, heads, out / "probe-full", test, "probe-full", None, monolithic=True,
                  overwrite=True)
    seg = [onnx.load(str(ee / f"seg{i}.onnx")) for i in range(2)]
    files: dict[str, Path] = {}
    for when, thr in (("never", math.inf), ("always", -math.inf)):
        s0 = tmp / f"probe-seg0-{when}.onnx"
        onnx.save(set_threshold(seg[0], thr), str(s0))
        files[f"seg0 {when}"] = s0
        for w in ("branch", "outer"):
            p = tmp / f"probe-if-{w}-{when}.onnx"
            onnx.save(assemble(seg, w, [thr]), str(p))
            files[f"if {w} {when}"] = p
    n0, i0, _ = _prefixed(seg[0], 0, "x")
    n1, i1, _ = _prefixed(seg[1], 1, "s0/feature")
    flat = onnx.helper.make_graph(n0 + n1, "flat", [seg[0].graph.input[0]], [
        onnx.helper.make_tensor_value_info("s0/exit", onnx.TensorProto.BOOL, ["b"]),
        onnx.helper.make_tensor_value_info("s1/prediction", onnx.TensorProto.INT64, ["b"])],
        initializer=i0 + i1)
    fm = onnx.helper.make_model(flat, opset_imports=list(seg[0].opset_import))
    fm.ir_version = seg[0].ir_version
    onnx.save(fm, str(tmp / "probe-flat.onnx"))
    ext = {"graph_optimization_level": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}
    nchwc = {"disabled_optimizers": ["NchwcTransformer"]}
    sess = {
        "full": ort_session(full / "seg0.onnx"),
        "full, level extended": ort_session(full / "seg0.onnx", **ext),
        "full, NCHWc off": ort_session(full / "seg0.onnx", **nchwc),
        "flat graph with head, no If": ort_session(tmp / "probe-flat.onnx"),
        "seg1": ort_session(ee / "seg1.onnx"),
        **{k: ort_session(p) for k, p in files.items()},
        "if branch never, level extended": ort_session(files["if branch never"], **ext),
        "if branch never, NCHWc off": ort_session(files["if branch never"], **nchwc),
    }

    def split(s0):  # the executor's work without its bookkeeping: seg0, then seg1 unless exit
        def run(v):
            feat, _, _, flag = s0.run(None, {"x": v})
            if not flag[0]:
                sess["seg1"].run(None, {"x": feat})
        return run

    def whole(s):
        return lambda v: s.run(None, {"x": v})

    runs = {k: whole(s) for k, s in sess.items() if k != "seg1" and not k.startswith("seg0")}
    runs["split never"] = split(sess["seg0 never"])
    runs["split always"] = split(sess["seg0 always"])
    x = test.normalised()[balanced_indices(test.labels, samples, 0)]
    load0 = os.getloadavg()
    med, cpu = interleave(runs, x, block)
    return {"samples": len(x), "block": block, "median_ns": med, "median_cpu_ns": cpu,
            "fraction_of_full": {k: v / med["full"] for k, v in med.items()},
            "cpu_fraction_of_full": {k: v / cpu["full"] for k, v in cpu.items()},
            "load_before": load0, "load_after": os.getloadavg()}


def main() -> None:
    import torch
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="fashion,resnet56", help="comma-separated: fashion, resnet56")
    p.add_argument("--samples", type=int, default=1000, help="class-balanced latency sample")
    p.add_argument("--no-tflite", action="store_true", help="skip the TFLite split")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 variants")
    p.add_argument("--probe", action="store_true", help="also the one-exit ResNet-56 probe")
    p.add_argument("--out", type=Path, default=Path("bench-out/strategies"))
    p.add_argument("--reuse", action="store_true",
                   help="measure the bundles a previous run left in --out (no fit, no export)")
    p.add_argument("--block", type=int, default=25,
                   help="samples per variant in turn (1: sample by sample)")
    a = p.parse_args()
    torch.set_num_threads(2)
    a.out.mkdir(parents=True, exist_ok=True)
    formats = ("onnx",) if a.no_tflite else ("onnx", "tflite")
    doc: dict = {"cores": os.cpu_count(), "load_start": os.getloadavg(), "models": {}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        if a.probe:
            doc["probe"] = probe(a.out, tmp, a.samples, a.block)
            print(json.dumps(doc["probe"], indent=1), flush=True)
        builders = {"fashion": build_fashion, "resnet56": build_resnet56}
        for name in filter(None, a.models.split(",")):
            _, _, ee, full, test = builders[name](a.out, formats, a.reuse, not a.no_int8)
            doc["models"][name] = measure_model(name, ee, full, test, a.samples, tmp,
                                                not a.no_tflite, a.block)
            if name in _BUILT:
                doc["models"][name]["charges"] = charges(_BUILT[name])
            print(json.dumps(doc["models"][name], indent=1, default=float), flush=True)
    doc["seconds"] = time.perf_counter() - t0
    tmpf = a.out / "bench_strategies.json.tmp"
    tmpf.write_text(json.dumps(doc, indent=1, default=float))
    tmpf.replace(a.out / "bench_strategies.json")
    for name, r in doc["models"].items():
        print_tables(name, r)
        if "charges" in r:
            ob = r["charges"]["overhead_bound"]
            print(f"bound {ob['max_overhead']}, kept exits {ob['kept_exits']} charged "
                  f"{ob['charged']:.3f} ({r['charges']['strategy_charged']})")
    print(f"{doc['seconds']:.0f} s; wrote {a.out / 'bench_strategies.json'}")


def print_tables(name: str, r: dict) -> None:
    """The markdown tables of one model: strategies x precision, int8 against fp32, sizes."""
    fr, w = r["latency"]["p50_fraction_of_monolithic"], r["whole_test"]
    cf = r["latency"]["cpu_p50_fraction_of_monolithic"]
    print(f"\n{name}: full accuracy {w['full_accuracy']:.4f}; load "
          f"{r['latency']['load_before'][0]:.1f} -> {r['latency']['load_after'][0]:.1f}\n"
          "| variant | accuracy | FLOPs fraction | p50 fraction wall (CPU) | "
          "exits-off overhead wall (CPU) |\n|---|---|---|---|---|")
    for fmt in r["formats"]:
        for strat in ("split", "ingraph"):
            label = f"{fmt} {strat}"
            if label in w and label in fr:
                off = f"{label}, exits off"
                print(f"| {label} | {w[label]['accuracy']:.4f} | {w[label]['flops_fraction']:.3f} | "
                      f"{fr[label]:.3f} ({cf[label]:.3f}) | {fr[off]:.3f} ({cf[off]:.3f}) |")
    if r.get("int8"):
        print("\n| int8 variant | accuracy − fp32 | cost (calibrated) | cost − calibrated | "
              "exit agreement with fp32 split |\n|---|---|---|---|---|")
        for k, v in r["int8"].items():
            cal, d = v["calibrated_cost"], v["cost_minus_calibrated"]
            cal_s = "-" if cal is None else f"{cal:.3f}"
            d_s = "-" if d is None else f"{d:+.3f}"
            print(f"| {k} | {100 * v['accuracy_minus_fp32']:+.2f} pt | {v['cost']:.3f} "
                  f"({cal_s}) | {d_s} | {v['exit_agreement_with_fp32_split']:.3f} |")
    sz = r["sizes"]
    print(f"\nsizes: segments {sz['segments']}, in-graph {sz['ingraph']}, bundle "
          f"{sz['total']} B with in-graph, {sz['total_without_ingraph']} B without")
    for fmt, why in r["auto_choice"].items():
        print(f"auto ({fmt}) chooses {why['name']} ({why.get('measured_median_ns')})")


if __name__ == "__main__":
    main()
