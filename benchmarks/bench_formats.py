"""{ONNX, TFLite} × {fp32, int8} on one bundle: accuracy, exit agreement, size, latency.

    .venv/bin/python benchmarks/bench_formats.py                     # build ResNet-56 bundle
    .venv/bin/python benchmarks/bench_formats.py --bundle PATH       # an existing bundle

Without --bundle it builds one from ResNet-56 (../shared/data/resnet-cifar10/resnet56.npz)
with `--exit lda:4 --max-drop 0.01`, formats onnx+tflite and int8; exits are fitted on
`--train-per-class` training images per class (a subset, to keep the run short).
Accuracy and exit agreement (same exit taken as fp32 ONNX) run the whole test subset
through each backend in shrinking batches; latency is measured one sample at a time, one
thread, all segments run (no early stop) and the four variants interleaved sample by
sample, then reported as medians and as ratios to fp32 ONNX. Goal: int8 within 1 point of
fp32 accuracy, >= 99 % exit agreement, >= 3x smaller.

`diagnosis` (ONNX int8 against ONNX fp32, on the test subset): per segment the relative
feature error ‖int8 − fp32‖/‖fp32‖ of the int8 chain (own features forward) and of the
segment alone (fed the fp32 feature), the exit flags each flips, where the two chains
first diverge, and how close to the threshold (|log-odds(confidence) − log-odds(threshold)|
of fp32) the diverging samples are, next to the same distance over all (sample, exit) pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = [("ONNX fp32", "onnx", "onnxruntime"), ("ONNX int8", "onnx-int8", "onnxruntime-int8"),
            ("TFLite fp32", "tflite", "tflite"), ("TFLite int8", "tflite-int8", "tflite-int8")]


def build(args: argparse.Namespace) -> Path:
    import torch

    from converters.quantize import Int8Tolerance
    from edge_ee.data import load_cifar10_jpeg
    from edge_ee.exitnet import from_resnet_cifar
    from edge_ee.exits import ExitSpec
    from edge_ee.models.resnet_cifar import load_resnet_cifar
    from edge_ee.models.weights import sha256_file
    from edge_ee.pipeline import FitConfig, calibration_record, evaluate_split, export, fit_exits
    torch.set_num_threads(1)
    net = from_resnet_cifar(load_resnet_cifar(args.model))
    train = load_cifar10_jpeg("train", args.data, per_class=args.train_per_class)
    test = load_cifar10_jpeg("test", args.data, per_class=args.test_per_class)
    cfg = FitConfig(exit_spec=ExitSpec.parse(args.exit), max_drop=args.max_drop,
                    exit_overhead_flops=args.exit_overhead_flops)
    t0 = time.perf_counter()
    fitted = fit_exits(net, train, cfg, progress=False)
    table = evaluate_split(net, fitted.heads, test, fitted.costs, progress=False)
    calib = calibration_record(fitted, cfg, table)
    print(f"fit {time.perf_counter() - t0:.0f} s on {len(train)} train images", file=sys.stderr)
    t0 = time.perf_counter()
    out = export(net, fitted.heads, args.out_bundle, test, f"{net.name}-{cfg.exit_spec.label}",
                 calib, sha256_file(Path(args.model)), overwrite=True,
                 formats=("onnx", "tflite"), int8=True, calibration_data=train,
                 calibration_samples=args.calibration_samples,
                 # a measurement: record the int8 agreement rates instead of refusing the bundle
                 int8_tol=Int8Tolerance(max_feature_rel_rms=10.0, min_prediction_agreement=0.0,
                                        min_exit_agreement=0.0, min_end_to_end_agreement=0.0))
    print(f"export (4 formats, validated) {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=None)
    p.add_argument("--model", default=str(ROOT.parent / "shared/data/resnet-cifar10/resnet56.npz"))
    p.add_argument("--data", default=None, help="CIFAR-10 JPEG zip (default: ../shared/data)")
    p.add_argument("--exit", default="lda:4")
    p.add_argument("--max-drop", type=float, default=0.01)
    p.add_argument("--exit-overhead-flops", type=float, default=0.0,
                   help="latency-aware thresholds: FLOPs-equivalent charged per kept exit (ResNet-56 "
                        "here: 6.31e6, measured by bench_e2cm_resnet56.py)")
    p.add_argument("--train-per-class", type=int, default=500)
    p.add_argument("--test-per-class", type=int, default=100, help="test subset size per class")
    p.add_argument("--latency-samples", type=int, default=150)
    p.add_argument("--calibration-samples", type=int, default=512)
    p.add_argument("--out-bundle", default=str(ROOT / "bench-out/formats-resnet56"))
    p.add_argument("--out", type=Path, default=ROOT / "bench-out/bench_formats.json")
    args = p.parse_args()
    bundle_path = args.bundle or build(args)

    from device_runners.backends import open_backend
    from device_runners.executor import run_batch
    from device_runners.manifest import load_bundle
    from edge_ee.data import balanced_indices, load_cifar10_jpeg
    bundle = load_bundle(bundle_path)
    test = load_cifar10_jpeg("test", args.data, per_class=args.test_per_class)
    x, y = test.normalised(), test.labels
    variants = [v for v in VARIANTS if v[1] in bundle.formats]
    backends = {name: open_backend(bundle, b, threads=1) for name, _, b in variants}

    res: dict[str, dict] = {}
    for name, fmt, _ in variants:
        rec, _, _ = run_batch(bundle, backends[name], x, y, batch_size=64)
        files = {s["files"][fmt] for s in bundle.segments}
        res[name] = {"format": fmt, "exit": np.asarray(rec["exit"]), "pred": np.asarray(rec["prediction"]),
                     "size_bytes": sum((bundle.root / f).stat().st_size for f in files)}
    # the test split is sorted by class: time a class-balanced sample, never the first N
    lat = interleaved_latency(bundle, backends, x[balanced_indices(y, args.latency_samples)])
    ref = res["ONNX fp32"]
    rows = []
    for name, _, _ in variants:
        r = res[name]
        seg_ratio = np.asarray(lat[name]["segment_median_ns"]) / np.asarray(
            lat["ONNX fp32"]["segment_median_ns"])
        rows.append({
            "variant": name, "accuracy": float((r["pred"] == y).mean()),
            "exit_agreement": float((r["exit"] == ref["exit"]).mean()),
            "prediction_agreement": float((r["pred"] == ref["pred"]).mean()),
            "size_bytes": int(r["size_bytes"]), "size_ratio": ref["size_bytes"] / r["size_bytes"],
            "segment_latency_ratio_mean": float(seg_ratio.mean()),
            "segment_latency_ratios": [round(float(v), 3) for v in seg_ratio],
            "segment_median_ns": lat[name]["segment_median_ns"],
            "full_depth_median_ns": lat[name]["full_median_ns"],
            "full_depth_ratio": lat[name]["full_median_ns"] / lat["ONNX fp32"]["full_median_ns"],
            "early_exit_median_ns": lat[name]["exit_median_ns"],
            "early_exit_ratio": lat[name]["exit_median_ns"] / lat["ONNX fp32"]["exit_median_ns"],
        })
    diag = diagnose(bundle, backends["ONNX fp32"], backends["ONNX int8"], x) \
        if "ONNX int8" in backends else None
    report = {"bundle": str(bundle_path), "test_samples": len(x), "diagnosis": diag,
              "latency_samples": min(args.latency_samples, len(x)), "threads": 1,
              "segments": len(bundle.segments), "rows": rows,
              "quantization": bundle.manifest.get("quantization")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(markdown(report))
    return 0


def _chain(backend, n_seg: int, x: np.ndarray, inputs: list | None = None, bs: int = 100
           ) -> list[dict[str, np.ndarray]]:
    outs, feat = [], x
    for i in range(n_seg):
        inp = feat if inputs is None else inputs[i]
        parts = [backend.run(i, inp[s : s + bs]) for s in range(0, len(inp), bs)]
        outs.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
        feat = outs[-1].get("feature", feat)
    return outs


def _exit_at(outs: list[dict[str, np.ndarray]]) -> np.ndarray:
    at = np.full(len(outs[0]["prediction"]), len(outs) - 1)
    for i in reversed(range(len(outs) - 1)):
        at[outs[i]["exit"].astype(bool)] = i
    return at


def diagnose(bundle, fp32, int8, x: np.ndarray) -> dict:
    """Where and why the int8 chain takes another exit than fp32 (see the module doc)."""
    n_seg = len(bundle.segments)
    ref = _chain(fp32, n_seg, x)
    own = _chain(int8, n_seg, x)
    alone = _chain(int8, n_seg, x, [x] + [o["feature"] for o in ref[:-1]])
    at_r, at_q = _exit_at(ref), _exit_at(own)

    def logit(v):
        v = np.clip(np.asarray(v, np.float64), 1e-12, 1 - 1e-12)
        return np.log(v) - np.log1p(-v)

    segs, margins = [], []
    for i in range(n_seg - 1):
        b = ref[i]["feature"].astype(np.float64)
        rel = [float(np.linalg.norm(o[i]["feature"] - b) / np.linalg.norm(b)) for o in (own, alone)]
        thr = bundle.segments[i]["exit"]["threshold"]
        segs.append({"segment": i, "feature_rel_err_chain": rel[0], "feature_rel_err_alone": rel[1],
                     "exit_flips_chain": int((own[i]["exit"] != ref[i]["exit"]).sum()),
                     "exit_flips_alone": int((alone[i]["exit"] != ref[i]["exit"]).sum())})
        margins.append(np.abs(logit(ref[i]["confidence"][at_r >= i]) - logit(thr)))
    div = np.where(at_r != at_q)[0]
    first = np.minimum(at_r, at_q)[div]
    flip = np.asarray([abs(logit(ref[s]["confidence"][n]) - logit(bundle.segments[s]["exit"]["threshold"]))
                       for n, s in zip(div, first, strict=True) if s < n_seg - 1])
    pct = [10, 50, 90]
    return {"segments": segs,
            "exit_agreement": float((at_r == at_q).mean()),
            "first_divergence_per_segment": np.bincount(first, minlength=n_seg).tolist(),
            "diverging_logodds_margin_p10_p50_p90": np.percentile(flip, pct).tolist() if len(flip) else [],
            "all_logodds_margin_p1_p5_p10_p50": np.percentile(np.concatenate(margins),
                                                              [1, 5, 10, 50]).tolist()}


def interleaved_latency(bundle, backends: dict, x: np.ndarray, warmup: int = 5) -> dict:
    """Per sample, each variant in turn (rotating order): every segment timed, no early stop."""
    segs = bundle.segments
    names = list(backends)
    times = {n: [] for n in names}
    exits = {n: [] for n in names}
    for k in range(-warmup, len(x)):
        order = names[k % len(names):] + names[: k % len(names)]
        for n in order:
            feat, lat, first = x[max(k, 0) : max(k, 0) + 1], [], None
            for s in segs:
                t0 = time.perf_counter_ns()
                out = backends[n].run(s["index"], feat)
                lat.append(time.perf_counter_ns() - t0)
                if first is None and (s["exit"]["kind"] == "final" or bool(out["exit"][0])):
                    first = s["index"]
                feat = out.get("feature", feat)
            if k >= 0:
                times[n].append(lat)
                exits[n].append(sum(lat[: first + 1]))
    return {n: {"segment_median_ns": [float(v) for v in np.median(np.asarray(times[n]), axis=0)],
                "full_median_ns": float(np.median(np.asarray(times[n]).sum(1))),
                "exit_median_ns": float(np.median(exits[n]))} for n in names}


def markdown(r: dict) -> str:
    lines = [f"{r['test_samples']} CIFAR-10 test images, {r['segments']} segments, latency: "
             f"{r['latency_samples']} samples interleaved, 1 thread (ratios to ONNX fp32; >1 = slower)",
             "", "| variant | accuracy | exit agreement | size (KiB) | smaller by | segment latency "
             "(mean ratio) | full depth | early exit (e2e) |", "|---|---|---|---|---|---|---|---|"]
    for w in r["rows"]:
        lines.append(f"| {w['variant']} | {w['accuracy']:.4f} | {w['exit_agreement']:.2%} | "
                     f"{w['size_bytes'] / 1024:.0f} | {w['size_ratio']:.2f}x | "
                     f"{w['segment_latency_ratio_mean']:.2f} | {w['full_depth_ratio']:.2f} "
                     f"({w['full_depth_median_ns'] / 1e6:.2f} ms) | {w['early_exit_ratio']:.2f} "
                     f"({w['early_exit_median_ns'] / 1e6:.2f} ms) |")
    d = r.get("diagnosis")
    if d:
        lines += ["", "ONNX int8 vs fp32, per segment: relative feature error (chain / segment alone), "
                  "exit flags flipped (chain / alone)", "",
                  "| seg | err chain | err alone | flips chain | flips alone |", "|---|---|---|---|---|"]
        lines += [f"| {g['segment']} | {g['feature_rel_err_chain']:.4f} | {g['feature_rel_err_alone']:.4f} "
                  f"| {g['exit_flips_chain']} | {g['exit_flips_alone']} |" for g in d["segments"]]
        lines += ["", f"first divergence per segment: {d['first_divergence_per_segment']}",
                  "log-odds distance to threshold, diverging samples p10/p50/p90: "
                  + ", ".join(f"{v:.3f}" for v in d["diverging_logodds_margin_p10_p50_p90"])
                  + "; all (sample, exit) pairs p1/p5/p10/p50: "
                  + ", ".join(f"{v:.3f}" for v in d["all_logodds_margin_p1_p5_p10_p50"])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
