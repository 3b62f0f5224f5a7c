"""Early-exit LMs (METHODS §5), side by side in one run:

1. zero-training next-token accuracy of every exit-head init and grouping at every exit
   K, on real held-out text (stories260K: the TinyStories sample; char GPT: the last 10 %
   of tinyshakespeare), beside the thesis' OPT-125m 0.24 / 0.05 / 0;
2. training curves (accuracy and loss vs Adam steps) in both settings for random, copy,
   class-aware (raw W·R+η), class-aware with a fitted logit scale and the mix → CSV + PNG;
3. device decoding, run by edge-ee-run on onnxruntime through the one executor: the
   early-exit bundle (exit policy calm, thresholds for --min-agreement), a verify-policy
   bundle (exits draft, the last segment verifies; --verify-exits), the early-exit bundle
   at full depth (--no-exit) and the monolithic bundle: tokens/s, exit rate per exit,
   next-token agreement with full-depth decoding (torch, teacher-forced on each output).

  PYTHONPATH=. nice -n 10 python benchmarks/bench_lm.py --parts zero,curves,device --out bench-lm
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

PUBLISHED = {"class-aware": 0.24, "copy": 0.05, "random": 0.0}


def zero_training(model_name: str, n_seq: int, length: int) -> list[dict]:
    from edge_ee.lm.exit_init import (
        GROUPINGS,
        INITS,
        InitContext,
        head_accuracy,
        held_out_features,
        init_weights,
        next_token_accuracy,
        token_stats,
    )
    from edge_ee.lm.sources import load_source
    src = load_source(model_name)
    m = src.model
    exits = tuple(range(1, m.config.n_layers))
    seqs = m.sample(n_seq, min(length, m.config.seq_len), seed=0, start=src.start)
    stats = token_stats(m, seqs.split(16), exits)
    rows = []
    feats, y = held_out_features(m, src.held_out, exits)
    for k in exits:
        ctx = InitContext(m, {g: stats[(k, g)] for g in GROUPINGS})
        for n in INITS:
            acc, ce = head_accuracy(*init_weights(n, ctx), feats[k], y)
            rows.append({"model": src.name, "exit": k, "init": n, "accuracy": acc, "loss": ce})
    w = m.output.weight.detach()
    acc, ce = next_token_accuracy(m, w, torch.zeros(w.shape[0]), m.config.n_layers, src.held_out)
    rows.append({"model": src.name, "exit": m.config.n_layers, "init": "final head",
                 "accuracy": acc, "loss": ce})
    return rows


CURVE_VARIANTS = {  # label → (init, logit scale, more ExitTrainConfig fields)
    "random/none": ("random", "none", {}), "copy/none": ("copy", "none", {}),
    "class-aware-target/none": ("class-aware-target", "none", {}),
    "class-aware-target/fitted": ("class-aware-target", "fitted", {}),
    "mix/fitted": ("mix", "fitted", {}),
    "mix/fitted-alpha-accuracy": ("mix", "fitted", {"fit_alpha": True, "alpha_by": "accuracy"}),
}


def curves(model_name: str, steps: int, exits: tuple[int, ...], n_seq: int, length: int,
           labels: list[str] | None = None) -> list[dict]:
    from edge_ee.lm.exit_init import token_stats
    from edge_ee.lm.sources import load_source
    from edge_ee.lm.train_exits import ExitTrainConfig, initial_heads, train_heads
    rows = []
    for setting in ("backbone", "nothing"):
        for label in labels or list(CURVE_VARIANTS):
            init, scale, more = CURVE_VARIANTS[label]
            src = load_source(model_name)  # fresh backbone per run (nothing-frozen changes it)
            m = src.model
            ln = min(length, m.config.seq_len)
            seqs = m.sample(n_seq, ln, seed=0, start=src.start)
            stats = token_stats(m, seqs.split(16), exits)
            cfg = ExitTrainConfig(init=init, setting=setting, steps=steps, logit_scale=scale,
                                  eval_every=max(steps // 10, 1), batch_size=4, **more)
            heads = initial_heads(m, exits, cfg, stats, seqs[:16])
            train = m.sample(n_seq, ln, seed=1, start=src.start)
            for r in train_heads(m, heads, train, src.held_out[:8], cfg):
                rows.append({"model": src.name, "setting": setting, "init": label, **r})
            print(setting, init, scale, rows[-1], flush=True)
    return rows


def plot_curves(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    settings = sorted({r["setting"] for r in rows})
    exits = sorted({r["exit"] for r in rows})
    fig, axes = plt.subplots(2 * len(settings), len(exits), figsize=(4 * len(exits), 6 * len(settings)),
                             squeeze=False)
    for si, s in enumerate(settings):
        for ei, k in enumerate(exits):
            for init in sorted({r["init"] for r in rows}):
                sel = [r for r in rows if r["setting"] == s and r["exit"] == k and r["init"] == init]
                for j, key in enumerate(("accuracy", "loss")):
                    ax = axes[2 * si + j][ei]
                    ax.plot([r["step"] for r in sel], [r[key] for r in sel], label=init)
                    ax.set_title(f"{s} frozen, exit after block {k}: {key}")
                    ax.set_xlabel("Adam steps")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _run(module: str, *args: str) -> None:
    r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])


def device(model_name: str, out: Path, exits: str, prompts_n: int, new_tokens: int,
           min_agreement: float, rounds: int = 3, reuse: bool = False,
           verify_exits: str = "1") -> dict:
    """Runs alternate (calm, verify, no-exit, monolithic) for `rounds` rounds, so a shared
    machine's load drifts hit all alike; tokens/s is the median over rounds. Agreement:
    torch's full-depth model teacher-forced on each run's own output (the share of
    generated tokens that full depth would also have chosen after the same prefix)."""
    from edge_ee.lm.decode_check import teacher_forced_agreement
    from edge_ee.lm.sources import load_source
    src = load_source(model_name)
    m = src.model
    if not (reuse and (out / "ee" / "manifest.json").is_file()):
        _run("edge_ee.cli", "lm", "build", "--model", model_name, "--exits", exits, "--out",
             str(out / "ee"), "--overwrite", "--min-agreement", str(min_agreement))
    # several verify bundles: exits separated by ';' ("1;1,3" → ee-verify, ee-verify-1)
    verify_dirs = {f"ee-verify{f'-{i}' if i else ''}": ex
                   for i, ex in enumerate(verify_exits.split(";"))}
    for d, ex in verify_dirs.items():
        if not (reuse and (out / d / "manifest.json").is_file()):
            _run("edge_ee.cli", "lm", "build", "--model", model_name, "--exits", ex,
                 "--out", str(out / d), "--overwrite", "--exit-policy", "verify")
    if not (reuse and (out / "full" / "manifest.json").is_file()):
        _run("edge_ee.cli", "lm", "build", "--model", model_name, "--monolithic", "--out",
             str(out / "full"), "--overwrite")
    # real prompts: the first 8 tokens of held-out sequences, evenly spread
    idx = np.linspace(0, len(src.held_out) - 1, prompts_n).astype(int)
    prompts = np.stack([src.held_out[i][0, :8].numpy() for i in idx])
    np.savez(out / "prompts.npz", x=prompts, max_new_tokens=new_tokens)
    res: dict = {"builds": {}}
    for b in ("ee", *verify_dirs):
        man = json.loads((out / b / "manifest.json").read_text())
        res["builds"][b] = {"exits_after_blocks": man["language_model"]["exits_after_blocks"],
                            "thresholds": [s["exit"].get("threshold") for s in man["segments"]],
                            **{k: man["model"]["exit_heads"].get(k)
                               for k in ("call_costs", "exit_choice", "target", "train_steps")}}
    common = ["--input", str(out / "prompts.npz"), "--quiet", "--idle-s", "0",
              "--power-source", "null", "--profile", "none", "--warmup-runs", "2"]
    runs = (("early-exit calm", "ee", ["--decoding", "calm"]),
            *((f"early-exit verify{f' ({d}: {ex})' if len(verify_dirs) > 1 else ''}", d,
               ["--decoding", "verify"]) for d, ex in verify_dirs.items()),
            ("same segments, no exit", "ee", ["--no-exit"]),
            ("monolithic", "full", []))
    speeds: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    loads = []
    for rnd in range(rounds):
        loads.append(os.getloadavg()[0])
        for name, bundle, extra in runs:
            f = out / f"{name.replace(' ', '_').replace(',', '').replace(':', '')}-{rnd}.json"
            _run("device_runners.cli", str(out / bundle), "--out", str(f), *common, *extra)
            r = json.loads(f.read_text())
            s = r["samples"]
            pos = np.asarray(s["position"])
            lat = np.asarray(s["latency_ns"], np.float64)[pos > 0]
            speeds[name].append(len(lat) / (lat.sum() / 1e9))
            if rnd:
                continue
            nseg = len(json.loads((out / bundle / "manifest.json").read_text())["segments"])
            exits_all = np.asarray(s["exit"])[pos > 0]
            seqs: dict[int, list[int]] = {}
            for p, t in zip(s["prompt"], s["prediction"], strict=True):
                seqs.setdefault(p, []).append(t)
            agreement = teacher_forced_agreement(
                m, [(prompts[p].tolist(), toks) for p, toks in seqs.items()])
            res[name] = {"tokens": len(s["prediction"]),
                         "exit_rate": (np.bincount(exits_all, minlength=nseg)
                                       / len(exits_all)).tolist(),
                         "rejected_drafts": r.get("rejected_drafts", 0),
                         "agreement_with_full_depth": agreement}
    for name in speeds:
        res[name]["tokens_per_s_rounds"] = speeds[name]
        res[name]["tokens_per_s"] = float(np.median(speeds[name]))
    base_seg = res["same segments, no exit"]["tokens_per_s"]
    base_mono = res["monolithic"]["tokens_per_s"]
    for name in speeds:
        res[name]["load_1min_per_round"] = loads
        res[name]["speedup_vs_no_exit"] = res[name]["tokens_per_s"] / base_seg
        res[name]["speedup_vs_monolithic"] = res[name]["tokens_per_s"] / base_mono
        print(name, res[name], flush=True)
    res["load_average_1min_per_round"] = loads
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="zero,curves,device")
    ap.add_argument("--models", default="stories260K,char-gpt")
    ap.add_argument("--stats-sequences", type=int, default=150)
    ap.add_argument("--sequence-length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--curve-exits", default="2,4")
    ap.add_argument("--curve-inits", default=None,
                    help=f"comma-separated curve variants (default all: {','.join(CURVE_VARIANTS)})")
    ap.add_argument("--device-exits", default="2", help="exits of the calm bundle (or auto)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--verify-exits", default="1", help="exits of the verify-policy bundle (or auto)")
    ap.add_argument("--min-agreement", type=float, default=0.97)
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    ap.add_argument("--reuse", action="store_true", help="reuse bundles already built in --out")
    ap.add_argument("--out", type=Path, default=Path("bench-lm"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    parts = a.parts.split(",")
    summary: dict = {"published_opt125m_zero_training": PUBLISHED}
    for model in a.models.split(","):
        if "zero" in parts:
            rows = zero_training(model, a.stats_sequences, a.sequence_length)
            summary[f"{model}/zero"] = rows
            for r in rows:
                print(f"{r['model']:>12} K={r['exit']} {r['init']:>20} acc {r['accuracy']:.4f} "
                      f"loss {r['loss']:.2f}", flush=True)
        if "curves" in parts:
            ex = tuple(int(v) for v in a.curve_exits.split(","))
            rows = curves(model, a.steps, ex, min(a.stats_sequences, 64), min(a.sequence_length, 128),
                          a.curve_inits.split(",") if a.curve_inits else None)
            with open(a.out / f"curves-{model}.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            plot_curves(rows, a.out / f"curves-{model}.png")
        if "device" in parts:
            name = Path(model).stem if model.endswith(".pt") else model
            summary[f"{name}/device"] = device(model, a.out / name, a.device_exits, a.prompts,
                                                a.new_tokens, a.min_agreement, a.rounds,
                                                a.reuse, a.verify_exits)
    tag = "+".join(Path(m).stem for m in a.models.split(","))
    (a.out / f"summary-{tag}-{a.parts.replace(',', '+')}.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
