"""{ONNX, TFLite} × {fp32, int8} on one bundle: accuracy, exit agreement, size, latency.

    .venv/bin/python benchmarks/bench_formats.py                     # build ResNet-56 bundle
    .venv/bin/python benchmarks/bench_formats.py --bundle PATH       # an existing bundle

Without --bundle it builds one from ResNet-56 (../shared/data/resnet-cifar10/resnet56.npz)
with `--exit lda:2 --max-drop 0.01`, formats onnx+tflite and int8; exits are fitted on
`--train-per-class` training images per class (a subset, to keep the run short).
Accuracy and exit agreement (same exit taken as fp32 ONNX) run the whole test subset
through each backend in shrinking batches; latency is measured one sample at a time, one
thread, all segments run (no early stop) and the four variants interleaved sample by
sample, then reported as medians and as ratios to fp32 ONNX. Goal: int8 within 1 point of
fp32 accuracy, >= 99 % exit agreement, >= 3x smaller.
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
    cfg = FitConfig(exit_spec=ExitSpec.parse(args.exit), max_drop=args.max_drop)
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
    p.add_argument("--exit", default="lda:2")
    p.add_argument("--max-drop", type=float, default=0.01)
    p.add_argument("--train-per-class", type=int, default=500)
    p.add_argument("--test-per-class", type=int, default=100, help="test subset size per class")
    p.add_argument("--latency-samples", type=int, default=150)
    p.add_argument("--calibration-samples", type=int, default=512)
    p.add_argument("--out-bundle", default=str(ROOT / "bench-out/formats-resnet56"))
    p.add_argument("--out", type=Path, default=ROOT / "bench-out/bench_formats.json")
    args = p.parse_args()
    bundle_path = args.bundle or build(args)

    from device_runners.backends import open_backend
    from device_runners.manifest import load_bundle
    from device_runners.runner import run_batch
    from edge_ee.data import load_cifar10_jpeg
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
    lat = interleaved_latency(bundle, backends, x[: args.latency_samples])
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
    report = {"bundle": str(bundle_path), "test_samples": len(x),
              "latency_samples": min(args.latency_samples, len(x)), "threads": 1,
              "segments": len(bundle.segments), "rows": rows,
              "quantization": bundle.manifest.get("quantization")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(markdown(report))
    return 0


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
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
