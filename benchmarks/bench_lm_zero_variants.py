"""Zero-training next-token accuracy of class-aware exit-head variants (METHODS §5) beside
copy-final, at every exit K of stories260K, on the real TinyStories sample (held out; the
statistics come from sequences the model sampled itself, as in bench_lm.py).

Variants of the faithful head (W_v = M_v, eta_v = (N0/2) ln P(v) - 1/2 |M_v|^2, target
grouping): unseen tokens with a zero or the copy column; N0 scaled by 0.5 / 2 (the
prior's weight); Laplace smoothing 1 vs 0.01; the mix alpha*class-aware + (1-alpha)*copy
with the class-aware part temperature-scaled and alpha chosen by NLL on the statistics
sequences (no held-out text used to choose anything).

  PYTHONPATH=. nice -n 10 python benchmarks/bench_lm_zero_variants.py --out bench-lm/zero-variants.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

PUBLISHED = {"class-aware": 0.24, "copy": 0.05, "random": 0.0}


def main() -> None:
    from edge_ee.lm.exit_init import (
        GROUPINGS,
        InitContext,
        class_aware,
        exit_features,
        head_accuracy,
        held_out_features,
        init_weights,
        token_stats,
    )
    from edge_ee.lm.sources import load_source
    from edge_ee.lm.train_exits import fit_temperature
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="stories260K")
    ap.add_argument("--stats-sequences", type=int, default=150)
    ap.add_argument("--sequence-length", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("bench-lm/zero-variants.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    src = load_source(a.model)
    m = src.model
    exits = tuple(range(1, m.config.n_layers))
    seqs = m.sample(a.stats_sequences, min(a.sequence_length, m.config.seq_len), seed=0,
                    start=src.start)
    stats = token_stats(m, seqs.split(16), exits)
    feats, y = held_out_features(m, src.held_out, exits)
    calib = seqs[:32]
    rows = []
    for k in exits:
        st = stats[(k, "target")]
        ctx = InitContext(m, {g: stats[(k, g)] for g in GROUPINGS})
        copy = init_weights("copy", ctx)
        heads = {"copy-final": copy, "random": init_weights("random", ctx),
                 "class-aware (zero column)": class_aware(st, copy[0], 1.0, "zero", True),
                 "class-aware (copy column)": class_aware(st, copy[0], 1.0, "copy", True),
                 "class-aware (smoothing 0.01)": class_aware(st, copy[0], 0.01, "zero", True),
                 "class-aware (no bias)": class_aware(st, copy[0], 1.0, "zero", False)}
        w, _ = heads["class-aware (zero column)"]
        half_n0 = st.pooled_within_variance()
        prior = st.priors(1.0).clamp_min(1e-300).log().float()
        for s in (0.5, 2.0):
            heads[f"class-aware (N0 x{s})"] = (w, s * half_n0 * prior - 0.5 * (w * w).sum(1))
        # the mix: class-aware scaled by a temperature fitted by NLL, alpha by NLL
        x = exit_features(m, calib, (k,))[k][:, :-1].reshape(-1, w.shape[1])
        yc = calib[:, 1:].reshape(-1)
        wa, ba = heads["class-aware (zero column)"]
        t = fit_temperature(x @ wa.T + ba, yc)
        wa, ba = wa / t, ba / t
        best = min((float(F.cross_entropy(al * (x @ wa.T + ba) + (1 - al) * (x @ copy[0].T), yc)), al)
                   for al in [i / 10 for i in range(11)])
        al = best[1]
        heads[f"mix (fitted T, alpha {al:.1f} by NLL)"] = (al * wa + (1 - al) * copy[0],
                                                           al * ba)
        for name, (hw, hb) in heads.items():
            acc, ce = head_accuracy(hw, hb, feats[k], y)
            rows.append({"exit": k, "head": name, "accuracy": acc, "loss": ce})
            print(f"K={k} {name:>38} acc {acc:.4f} loss {ce:.2f}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"published_opt125m": PUBLISHED, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
