"""`edge-ee report` for segmentation runs: mIoU against GFLOPs and measured latency.

Dispatched from `edge_ee.report` when a bundle's `model.task` is "segmentation". From the
raw results of `edge-ee-run` (per image: latency, per-segment latency, tokens stopping
at each exit, confusion matrix on the first pass) and the bundle's manifest (per-class
thresholds, the per-token cost model) it computes per run: mIoU and IoU per class (void
ignored), GFLOPs per image from the tokens that reached each exit (the masked cost:
stem + each reached stage's dense part + remaining tokens × per-token cost), latency
percentiles, exit fractions and energy when power was sampled. The first monolithic run
(else the first run) is the baseline of the ratios. `write_seg_report` writes
report.md, report.json, tables/*.csv|json, figures/*.png and a self-contained
report.html: mIoU vs GFLOPs, mIoU vs latency, per-class thresholds as a bar chart, exit
fractions and overlays of where pixels exited on a few images.
"""

from __future__ import annotations

import base64
import datetime as dt
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from device_runners.manifest import Bundle
from device_runners.results import atomic_write_json
from edge_ee.errors import ResultsError
from edge_ee.report import _write_text, write_tables_and_figures
from edge_ee.report_tables import ESTIMATED, Table, fmt, table_markdown
from edge_ee.unit_cost import reach_from_counts, unit_flops

OVERLAY_IMAGES = 3


def _pct(values: Any) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return {}
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "count": int(a.size)}


def masked_flops(tokens_per_exit: np.ndarray, cost: dict[str, Any]) -> np.ndarray:
    """FLOPs per image (N,) from tokens stopping at each exit (N,E) and the manifest cost model."""
    return unit_flops(reach_from_counts(tokens_per_exit), cost["stem_flops"],
                      cost["dense_flops"], cost["per_token_flops"])


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def _images(results: dict[str, Any], bundle: Bundle, index: list[int]) -> np.ndarray | None:
    """uint8 (n,H,W,3) images the exit maps belong to (the run's input file or golden)."""
    src = results["protocol"].get("input")
    try:
        if src in (None, "golden"):
            x = bundle.golden()["input"][index]
        else:
            with np.load(src, allow_pickle=False) as z:
                x = z["x" if "x" in z.files else "x_test"][index]
    except (OSError, KeyError, ValueError, IndexError):
        return None
    if x.dtype == np.uint8:
        return x
    raw = bundle.manifest["input"]["raw"]
    x = x.transpose(0, 2, 3, 1) * np.asarray(raw["std"]) + np.asarray(raw["mean"])
    return np.clip(x * 255.0, 0, 255).astype(np.uint8)


def summarize_seg(results: dict[str, Any], bundle: Bundle) -> dict[str, Any]:
    """Statistics of one segmentation run; refuses results that came from another bundle."""
    if results["bundle"]["manifest_sha256"] != bundle.manifest_sha256:
        raise ResultsError(
            f"results were recorded with bundle {results['bundle']['manifest_sha256'][:12]}…, "
            f"not {bundle.manifest_sha256[:12]}… ({bundle.root}); pass the bundle that was run")
    if results.get("task") != "segmentation":
        raise ResultsError(f"{bundle.root} is a segmentation bundle but the results are not "
                           "from a segmentation run")
    m, seg = bundle.manifest, bundle.manifest["segmentation"]
    s = results["samples"]
    k = len(m["classes"])
    first = np.asarray(s["pass"]) == 0
    tpe = np.asarray(s["tokens_per_exit"], np.int64).reshape(len(first), -1)
    flops = masked_flops(tpe[first], seg["cost"])
    confs = [c for c in s["confusion"] if c is not None]
    conf = np.asarray(confs, np.int64).sum(0).reshape(k, k) if confs else None
    iou = None if conf is None else iou_per_class(conf)
    no_exit = bool(results["protocol"].get("no_exit"))
    variant = m["model"].get("variant", "?") + (" (--no-exit)" if no_exit else "")
    maps = results.get("exit_maps") or {"image": [], "token_exit": []}
    idx = list(maps["image"][:OVERLAY_IMAGES])
    seg_lat = [[v[i] for v in s["segment_latency_ns"] if len(v) > i]
               for i in range(len(bundle.segments))]
    from edge_ee.report import energy_of_run
    energy, _ = energy_of_run({**results, "samples": {"exit": s["image"]}})
    return {
        "task": "segmentation", "model": m["model"]["name"], "variant": variant,
        "no_exit": no_exit, "backend": results["backend"], "complete": results["complete"],
        "images": int(first.sum()), "samples": len(first), "classes": list(m["classes"]),
        "thresholds": seg["thresholds"], "calibration": m.get("calibration"),
        "miou": None if iou is None or np.all(np.isnan(iou)) else float(np.nanmean(iou)),
        "iou_per_class": None if iou is None else [None if np.isnan(v) else float(v) for v in iou],
        "gflops_per_image": float(flops.mean() / 1e9) if len(flops) else None,
        "full_gflops": float(seg["cost"]["full_flops"] / 1e9),
        "exit_fractions": (tpe[first].sum(0) / max(tpe[first].sum(), 1)).tolist(),
        "latency_ns": _pct(s["latency_ns"]), "assemble_latency_ns":
            {} if seg["monolithic"] else _pct(s["assemble_latency_ns"]),
        "segment_latency_ns": [_pct(v) for v in seg_lat],
        "segment_names": [sg["name"] for sg in bundle.segments],
        "first_inference_ns": results.get("first_inference_ns"), "init_ns": results.get("init_ns"),
        "energy": energy, "token_hw": seg["token_hw"],
        "series": {"latency_ns": s["latency_ns"], "overlay_index": idx,
                   "exit_maps": [np.asarray(maps["token_exit"][j]) for j in range(len(idx))],
                   "images": _images(results, bundle, idx) if idx else None},
    }


def _baseline(sums: list[dict[str, Any]]) -> dict[str, Any]:
    return next((s for s in sums if s["variant"] == "monolithic"), sums[0])


def _ms(v: float | None) -> float | None:
    return None if v is None else v / 1e6


def build_seg_tables(sums: list[dict[str, Any]], names: list[str]) -> list[Table]:
    base = _baseline(sums)
    b_lat, b_fl = base["latency_ns"].get("p50"), base["gflops_per_image"]
    rows = []
    for s, nm in zip(sums, names, strict=True):
        lat = s["latency_ns"]
        e = s.get("energy")
        rows.append([nm, s["variant"], s["images"],
                     None if s["miou"] is None else 100 * s["miou"], s["gflops_per_image"],
                     None if not b_fl else 100 * (s["gflops_per_image"] / b_fl - 1),
                     _ms(lat.get("p50")), _ms(lat.get("mean")), _ms(lat.get("p90")),
                     None if not b_lat else 100 * (lat["p50"] / b_lat - 1),
                     "/".join(f"{100 * f:.1f}" for f in s["exit_fractions"]),
                     _energy(e)])
    est = any(s.get("energy") and s["energy"]["is_estimate"] for s in sums)
    overview = Table("seg_overview", "mIoU vs GFLOPs vs measured latency (per image)"
                     + (" — energy ESTIMATED from the hardware profile, not measured" if est else ""),
                     ["run", "variant", "images", "miou_pct", "gflops", "gflops_vs_base_pct",
                      "latency_p50_ms", "latency_mean_ms", "latency_p90_ms",
                      "latency_p50_vs_base_pct", "tokens_exiting_per_exit_pct",
                      "energy_per_image_mj"], rows,
                     note=f"base = {names[sums.index(base)]}; GFLOPs are the masked cost from the "
                          "tokens that reached each exit; latency is end to end on the device")
    with_thr = [(s, nm) for s, nm in zip(sums, names, strict=True) if s["thresholds"]]
    classes = sums[0]["classes"]
    thr = Table("seg_thresholds", "Per-class thresholds T_k baked into the graphs",
                ["class", *[nm for _, nm in with_thr]],
                [[c, *[s["thresholds"][i] for s, _ in with_thr]] for i, c in enumerate(classes)])
    iou = Table("seg_iou", "IoU per class (%)", ["class", *names],
                [[c, *[None if s["iou_per_class"] is None or s["iou_per_class"][i] is None
                       else 100 * s["iou_per_class"][i] for s in sums]]
                 for i, c in enumerate(classes)])
    seg_rows = [[nm, sn, _ms(p.get("p50")), _ms(p.get("mean")), p.get("count")]
                for s, nm in zip(sums, names, strict=True)
                for sn, p in [*zip(s["segment_names"], s["segment_latency_ns"], strict=True),
                              ("assemble", s["assemble_latency_ns"])] if p]
    segs = Table("seg_segment_latency", "Latency per segment (images that reached it)",
                 ["run", "segment", "p50_ms", "mean_ms", "images"], seg_rows)
    return [overview, thr, iou, segs]


def _md(sums: list[dict[str, Any]], names: list[str], tables: list[Table],
        figures: dict[str, str]) -> str:
    lines = ["# edge-ee segmentation report", ""]
    for s, nm in zip(sums, names, strict=True):
        if not s["complete"]:
            lines.append(f"- warning: {nm}: the run was interrupted")
        if s["miou"] is None:
            lines.append(f"- {nm}: no labels were given to edge-ee-run, so no mIoU")
        e = s.get("energy") or {}
        for note in [*e.get("caveats", []), *e.get("warnings", [])]:
            lines.append(f"- energy, {nm}: {note}")
    for t in tables:
        lines += table_markdown(t)
    for title, path in figures.items():
        lines += [f"![{title}]({path})", ""]
    lines.append("Tables as CSV and JSON: " + ", ".join(f"`tables/{t.name}.csv`" for t in tables))
    return "\n".join(lines) + "\n"


def _html(names: list[str], tables: list[Table], pngs: dict[str, tuple[str, bytes]]) -> str:
    from edge_ee.report_html import CSS, table_html

    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>edge-ee "
             f"segmentation report</title><style>{CSS}</style></head><body><header><h1>edge-ee "
             f"segmentation report</h1><p>{escape(' vs '.join(names))} · generated {when}</p>"
             "</header><main>", table_html(tables[0])]
    for _key, (title, png) in pngs.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<section><h2>{escape(title)}</h2><img alt='{escape(title)}' "
                     f"src='data:image/png;base64,{data}'></section>")
    parts += [table_html(t) for t in tables[1:]]
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _energy(e: dict[str, Any] | None) -> Any:
    """Energy per image; an estimate says so in the cell itself."""
    v = None if e is None else e.get("energy_per_inference_mj")
    return v if v is None or not e["is_estimate"] else f"{fmt(v)} ({ESTIMATED})"


def write_seg_report(sums: list[dict[str, Any]], names: list[str], out_dir: str | Path, *,
                     html: bool = True, figures: bool = True) -> Path:
    """report.md, report.json, tables/*.csv|json, figures/*.png and report.html; returns the .md."""
    if any(s.get("task") != "segmentation" for s in sums):
        raise ResultsError("cannot mix segmentation and classification runs in one report; "
                           "report them separately")
    out = Path(out_dir)
    tables = build_seg_tables(sums, names)
    pngs: dict[str, tuple[str, bytes]] = {}
    if figures or html:
        from edge_ee.report_seg_plots import make_seg_figures
        pngs = make_seg_figures(sums, names)
    paths = write_tables_and_figures(out, tables, pngs if figures else {})
    _write_text(out / "report.md", _md(sums, names, tables, paths))
    clean = [{k: v for k, v in s.items() if k != "series"} for s in sums]
    atomic_write_json(out / "report.json", dict(zip(names, clean, strict=True)))
    if html:
        _write_text(out / "report.html", _html(names, tables, pngs))
    return out / "report.md"
