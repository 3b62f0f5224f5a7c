"""Ceiling of early-exit decoding for one LM: exit heads trained as `edge-ee lm build`
trains them (mix init, 200 Adam steps, backbone frozen) after every block, then on greedy
continuations of sampled prefixes (what the device decodes) the share of positions where
each exit's argmax equals full depth's, and the tokens/s ratio an oracle drafter would
reach against the monolithic graph with the given call costs (µs: a block, a call):
draft(K) + (1 − a_K)·rest(K) against mono.

  PYTHONPATH=. python benchmarks/bench_lm_ceiling.py --model bench-lm-out/char-gpt-large.pt \\
      --block-us 80 --call-us 45
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    from edge_ee.lm.build import CALIB_PREFIX, _confidences
    from edge_ee.lm.exit_init import token_stats
    from edge_ee.lm.sources import load_source
    from edge_ee.lm.train_exits import ExitTrainConfig, initial_heads, train_heads
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="stories260K", help="model (default stories260K)")
    ap.add_argument("--block-us", type=float, required=True, help="µs a block")
    ap.add_argument("--call-us", type=float, required=True, help="µs a call (fixed part)")
    ap.add_argument("--train-steps", type=int, default=200, help="head training steps (200)")
    ap.add_argument("--init", default="mix", help="exit-head init (default mix, as the build)")
    ap.add_argument("--head-target", default="next", choices=("next", "full-depth"),
                    help="what the heads learn (default next, as the build)")
    ap.add_argument("--out", default=None, help="JSON to write (default: none)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    src = load_source(a.model)
    m = src.model
    n = m.config.n_layers
    length = min(256, m.config.seq_len)
    exits = tuple(range(1, n))
    seqs = m.sample(150, length, seed=0, start=src.start)
    stats = token_stats(m, seqs.split(16), exits)
    cfg = ExitTrainConfig(init=a.init, setting="backbone", steps=a.train_steps, lr=3e-3,
                          logit_scale="fitted", eval_every=max(a.train_steps, 1),
                          target=a.head_target)
    heads = initial_heads(m, exits, cfg, stats, seqs[:16])
    train_heads(m, heads, m.sample(150, length, seed=1, start=src.start), src.held_out, cfg)
    calib = m.sample(64, min(length, 136), seed=2, start=src.start, greedy_from=CALIB_PREFIX)
    per_exit, _ = _confidences(m, heads, calib)
    mono = n * a.block_us + a.call_us
    rows = []
    for k in exits:
        agree = float(per_exit[k][1][:, CALIB_PREFIX:].mean())  # the greedy part
        oracle = (k * a.block_us + a.call_us) + (1 - agree) * ((n - k) * a.block_us + a.call_us)
        rows.append({"exit": k, "agreement_with_full_depth": agree,
                     "oracle_speedup_vs_monolithic": mono / oracle})
        print(f"K={k} agreement {agree:.3f} oracle ≤ {mono / oracle:.2f}× monolithic", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"model": a.model, "block_us": a.block_us, "call_us": a.call_us,
                   "init": a.init, "head_target": a.head_target, "train_steps": a.train_steps,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
