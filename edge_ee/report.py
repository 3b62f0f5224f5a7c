"""`edge-ee report`: statistics from raw results.json + the bundle's manifest.

Computes on the host what the device only recorded: accuracy, exit histogram, latency
percentiles (end-to-end and per segment), expected FLOPs per sample from the exits
taken, and (when several runs are given) ratios side by side. Writes Markdown and JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from device_runners.manifest import Bundle
from device_runners.results import atomic_write_json
from edge_ee.errors import ResultsError

PERCENTILES = (50, 90, 95, 99)


def _pct(values: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return {}
    out = {f"p{p}": float(np.percentile(a, p)) for p in PERCENTILES}
    out.update(mean=float(a.mean()), max=float(a.max()), min=float(a.min()), count=int(a.size))
    return out


def summarize(results: dict[str, Any], bundle: Bundle) -> dict[str, Any]:
    """Statistics of one run; refuses results that came from another bundle."""
    if results["bundle"]["manifest_sha256"] != bundle.manifest_sha256:
        raise ResultsError(
            f"results were recorded with bundle {results['bundle']['manifest_sha256'][:12]}…, "
            f"not {bundle.manifest_sha256[:12]}… ({bundle.root}); pass the bundle that was run")
    segs = bundle.segments
    s = results["samples"]
    exits = np.asarray(s["exit"], np.int64)
    n = len(exits)
    seg_flops = np.asarray([seg["flops"] for seg in segs], np.float64)
    cum = np.cumsum(seg_flops)
    full = float(bundle.manifest.get("cost", {}).get("full_flops") or cum[-1])
    flops = cum[exits] if n else np.zeros(0)
    labels = [v for v in s["label"] if v is not None]
    acc = None
    if n and len(labels) == n:
        acc = float((np.asarray(s["prediction"]) == np.asarray(labels)).mean())
    hist = np.bincount(exits, minlength=len(segs)) if n else np.zeros(len(segs), int)
    out: dict[str, Any] = {
        "model": results["bundle"]["model"],
        "backend": results["backend"],
        "mode": results["protocol"]["mode"],
        "no_exit": results["protocol"].get("no_exit", False),
        "complete": results["complete"],
        "samples": n,
        "accuracy": acc,
        "exit_histogram": {segs[i]["exit"]["point"]: int(hist[i]) for i in range(len(segs))},
        "expected_flops": float(flops.mean()) if n else None,
        "full_flops": full,
        "cost_fraction": float(flops.mean() / full) if n else None,
        "init_ns": results.get("init_ns"),
        "first_inference_ns": results.get("first_inference_ns"),
    }
    if "segment_latency_ns" in s:
        lat = [sum(v) for v in s["segment_latency_ns"]]
        out["latency_ns"] = _pct(lat)
        per_seg = [[v[i] for v in s["segment_latency_ns"] if len(v) > i] for i in range(len(segs))]
        out["segment_latency_ns"] = [_pct(v) for v in per_seg]
    if results.get("batches"):
        tot = sum(sum(b["segment_latency_ns"]) for b in results["batches"])
        out["batch_latency_ns_per_sample"] = tot / max(n, 1)
    return out


def to_markdown(summaries: list[dict[str, Any]], names: list[str]) -> str:
    lines = ["# edge-ee run report", ""]
    head = "| metric | " + " | ".join(names) + " |"
    lines += [head, "|---" * (len(names) + 1) + "|"]

    def row(label: str, fn: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(s) for s in summaries) + " |")

    def ms(v: float | None) -> str:
        return "–" if v is None else f"{v / 1e6:.3f} ms"

    row("samples", lambda s: str(s["samples"]) + ("" if s["complete"] else " (incomplete)"))
    row("backend", lambda s: f"{s['backend']['version']} ×{s['backend']['threads']}")
    row("mode", lambda s: s["mode"] + (" (exits ignored)" if s["no_exit"] else ""))
    row("accuracy", lambda s: "–" if s["accuracy"] is None else f"{s['accuracy']:.4f}")
    row("expected MFLOPs / sample", lambda s: f"{s['expected_flops'] / 1e6:.2f}")
    row("cost / full network", lambda s: f"{s['cost_fraction']:.3f}")
    for p in ("p50", "p90", "p95", "p99", "max"):
        row(f"latency {p}", lambda s, p=p: ms(s.get("latency_ns", {}).get(p)))
    row("latency mean", lambda s: ms(s.get("latency_ns", {}).get("mean")
                                     or s.get("batch_latency_ns_per_sample")))
    row("first inference", lambda s: ms(s["first_inference_ns"]))
    if len(summaries) > 1:
        base = summaries[0]
        for s, nm in zip(summaries[1:], names[1:], strict=True):
            b, c = base.get("latency_ns", {}).get("p50"), s.get("latency_ns", {}).get("p50")
            if b and c:
                lines.append("")
                lines.append(f"- median latency {nm} / {names[0]}: **{c / b:.3f}×**; "
                             f"FLOPs ratio {s['expected_flops'] / base['expected_flops']:.3f}×")
    lines += ["", "## Exits taken", ""]
    for s, nm in zip(summaries, names, strict=True):
        total = max(s["samples"], 1)
        hist = ", ".join(f"{k}: {v} ({v / total:.1%})" for k, v in s["exit_histogram"].items())
        lines.append(f"- **{nm}**: {hist}")
    return "\n".join(lines) + "\n"


def write_report(summaries: list[dict[str, Any]], names: list[str], out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = to_markdown(summaries, names)
    tmp = out / ".report.md.tmp"
    tmp.write_text(md)
    tmp.replace(out / "report.md")
    atomic_write_json(out / "report.json", dict(zip(names, summaries, strict=True)))
    return out / "report.md"
