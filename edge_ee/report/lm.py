"""Report of language-model decoding runs (`edge-ee-run` on a `language-model` bundle).

Per run: tokens/s over the timed decoding steps, per-token latency percentiles, the exit
rate at every exit, expected FLOPs per token from the exit distribution, and — against
the first run given (the full-depth baseline) — the speed-up and the next-token agreement
of the tokens generated for the same prompts before their first divergence (positions
after a divergence have different prefixes, so they are not compared; the exact
teacher-forced agreement is in benchmarks/bench_lm.py).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from device_runners.manifest import Bundle
from edge_ee.errors import ResultsError
from edge_ee.report.tables import Table, fmt, table_markdown


def summarize_lm(results: dict[str, Any], bundle: Bundle) -> dict[str, Any]:
    if results["bundle"]["manifest_sha256"] != bundle.manifest_sha256:
        raise ResultsError(f"results were recorded with another bundle than {bundle.root}; "
                           "pass the bundle that was run")
    s = results["samples"]
    steps = np.concatenate([np.asarray(v, np.int64) for v in s["step_ns"]]) if s["step_ns"] \
        else np.zeros(0, np.int64)
    exits = np.concatenate([np.asarray(e[1:], np.int64) for e in s["exits"]]) if s["exits"] \
        else np.zeros(0, np.int64)
    segs = bundle.segments
    cum = np.cumsum([seg["flops"] for seg in segs])
    rate = np.bincount(exits, minlength=len(segs)) / max(len(exits), 1)
    no_exit = bool(results["protocol"].get("no_exit"))
    return {
        "task": "language-model", "model": results["bundle"]["model"],
        "no_exit": no_exit, "steps": len(steps),
        "tokens_per_s": float(len(steps) / (steps.sum() / 1e9)) if len(steps) else None,
        "token_latency_us": {f"p{q}": float(np.percentile(steps, q) / 1e3) if len(steps) else None
                             for q in (50, 90, 99)},
        "exit_rate": rate.tolist(),
        "exit_points": [seg["exit"]["point"] for seg in segs],
        "flops_per_token": float(cum[exits].mean()) if len(exits) else float(cum[-1]),
        "full_flops_per_token": float(cum[-1]),
        "tokens": [list(t) for t in s["tokens"]], "prompt": list(s["prompt"]),
    }


def _agreement(base: dict[str, Any], run: dict[str, Any]) -> float | None:
    same = total = 0
    seen: set[int] = set()
    for p, toks in zip(run["prompt"], run["tokens"], strict=True):
        if p in seen or p not in base["prompt"]:
            continue
        seen.add(p)
        ref = base["tokens"][base["prompt"].index(p)]
        for a, b in zip(ref, toks, strict=False):
            total += 1
            if a != b:
                break
            same += 1
    return same / total if total else None


def write_lm_report(sums: list[dict[str, Any]], names: list[str], out_dir: str | Path) -> Path:
    from edge_ee.report.write import atomic_write_text as _write_text
    from edge_ee.report.write import write_tables_and_figures
    if any(s.get("task") != "language-model" for s in sums):
        raise ResultsError("cannot mix language-model runs with other tasks in one report")
    base = sums[0]
    rows = []
    for n, s in zip(names, sums, strict=True):
        speed = (s["tokens_per_s"] / base["tokens_per_s"]
                 if s["tokens_per_s"] and base["tokens_per_s"] else None)
        rows.append([n, s["steps"], s["tokens_per_s"], speed, s["token_latency_us"]["p50"],
                     s["token_latency_us"]["p90"], s["flops_per_token"] / s["full_flops_per_token"],
                     _agreement(base, s), " / ".join(f"{r:.3f}" for r in s["exit_rate"])])
    t = Table("lm_decoding", "Token-by-token decoding",
              ["run", "tokens", "tokens/s", f"speed-up vs {names[0]}", "p50 µs/token",
               "p90 µs/token", "FLOPs fraction", f"agreement with {names[0]} (to divergence)",
               "exit rate per exit"], rows)
    out = Path(out_dir)
    write_tables_and_figures(out, [t], {})
    md = ["# Early-exit language-model decoding", "", *table_markdown(t)]
    _write_text(out / "report.md", "\n".join(md) + "\n")
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in r) + "</tr>"
                    for r in t.rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    _write_text(out / "report.html", f"<!doctype html><meta charset='utf-8'><title>{t.title}"
                f"</title><h1>{t.title}</h1><table border=1><tr>{head}</tr>{cells}</table>\n")
    return out / "report.md"


__all__ = ["fmt", "summarize_lm", "write_lm_report"]
