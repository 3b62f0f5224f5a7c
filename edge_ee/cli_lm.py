"""`edge-ee lm …`: early-exit language models (METHODS §5).

  edge-ee lm generate   --model stories260K --prompt "Once upon a time" --max-new-tokens 40
  edge-ee lm init-eval  --model stories260K --exits 1,2,3,4      (zero-training accuracy)
  edge-ee lm train-exits --init mix --setting backbone --steps 200 --csv curve.csv --plot c.png
  edge-ee lm build      --exits 2 --out lm-ee       (and --monolithic --out lm-full)
  edge-ee lm train-char --out edge_ee/assets/char_gpt.pt
  edge-ee-run lm-ee --out ee.json ; edge-ee-run lm-ee --no-exit --out full.json

`--model` is 'stories260K' (../shared/data or $EDGE_EE_DATA), a llama2.c v0 .bin,
'char-gpt' (the shipped character-level GPT) or a char GPT .pt. Flags map 1:1 to the
fields of the configs in `edge_ee.lm` (no torch at import: handlers import it).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _exits(text: str) -> tuple[int, ...]:
    from edge_ee.errors import ConfigError
    if text.strip() == "auto":
        return ()  # build: every block a candidate, the cheapest a token kept
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise ConfigError(f"--exits {text!r}: write block numbers, e.g. 1,2,3") from err


STATS_HELP = "sequences sampled from the model for the exit statistics"
LENGTH_HELP = "tokens per sampled sequence (at most the model's context)"
INIT_HELP = ("exit-head init: random, copy, class-aware-target, class-aware-input or mix "
             "(α·class-aware + (1−α)·copy)")
SCALE_HELP = ("class-aware logits: none (raw W·R + η), posterior (divided by N₀/2) or fitted "
              "(divided by a temperature fitted by NLL on the statistics data)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="stories260K",
                   help="stories260K, a llama2.c v0 .bin, char-gpt or a char GPT .pt")
    p.add_argument("--tokenizer", default=None, help="llama2.c tokenizer .bin "
                                                     "(default: tok512.bin beside the model)")


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    lm = sub.add_parser("lm", help="early-exit language models: exit-head init, training, "
                                   "token-by-token early-exit decoding bundles")
    s = lm.add_subparsers(dest="lm_command", required=True)
    g = s.add_parser("generate", help="greedy decoding with the torch model (full depth)")
    _model_args(g)
    g.add_argument("--prompt", default="", help="text to continue (default: empty, the start token)")
    g.add_argument("--max-new-tokens", type=int, default=60, help="tokens to generate")
    e = s.add_parser("init-eval", help="zero-training next-token accuracy of each exit-head "
                                       "init and grouping at every exit, on held-out real text")
    _model_args(e)
    e.add_argument("--exits", default=None, help="blocks with an exit (default: all but last)")
    e.add_argument("--stats-sequences", type=int, default=150, help=STATS_HELP)
    e.add_argument("--sequence-length", type=int, default=256, help=LENGTH_HELP)
    e.add_argument("--seed", type=int, default=0, help="random seed of the sampled sequences")
    t = s.add_parser("train-exits", help="train exit heads from an init; curves vs steps")
    _model_args(t)
    t.add_argument("--exits", default=None, help="blocks with an exit (default: all but last)")
    t.add_argument("--init", default="mix", help=INIT_HELP)
    t.add_argument("--setting", choices=("backbone", "nothing"), default="backbone",
                   help="backbone: all but the LM heads frozen; nothing: nothing frozen")
    t.add_argument("--logit-scale", choices=("none", "posterior", "fitted"), default="fitted",
                   help=SCALE_HELP)
    t.add_argument("--steps", type=int, default=200, help="training steps")
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate (Adam)")
    t.add_argument("--batch-size", type=int, default=8, help="sequences per step")
    t.add_argument("--eval-every", type=int, default=10, help="held-out accuracy every N steps")
    t.add_argument("--alpha", type=float, default=None,
                   help="mix: weight α of class-aware (default: 0.8 with --setting backbone, 0.6 "
                        "with nothing; --fit-alpha chooses it)")
    t.add_argument("--fit-alpha", action="store_true",
                   help="mix: choose alpha on the statistics sequences (see --alpha-by)")
    t.add_argument("--alpha-by", choices=("nll", "accuracy"), default="nll",
                   help="--fit-alpha: the lowest NLL, or the best accuracy (ties: lowest NLL; "
                        "the mix then starts no worse than the better of its parts)")
    t.add_argument("--stats-sequences", type=int, default=150, help=STATS_HELP)
    t.add_argument("--sequence-length", type=int, default=256, help=LENGTH_HELP)
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--csv", default=None, help="write the curve as CSV")
    b = s.add_parser("build", help="early-exit (or --monolithic) decoding bundle for edge-ee-run")
    _model_args(b)
    b.add_argument("--out", required=True, help="bundle folder to write")
    b.add_argument("--exits", default="2",
                   help="comma-separated blocks with an exit, or auto (one exit, the block "
                        "with the least cost a token under --exit-policy and --call-costs)")
    b.add_argument("--init", default="mix", help=INIT_HELP)
    b.add_argument("--logit-scale", choices=("none", "posterior", "fitted"), default="fitted",
                   help=SCALE_HELP)
    b.add_argument("--train-steps", type=int, default=200, help="exit-head training steps")
    b.add_argument("--head-target", choices=("next", "full-depth"), default="next",
                   help="what the exit heads learn: the sampled text's next token, or full "
                        "depth's greedy token (what decoding must agree with)")
    b.add_argument("--lr", type=float, default=3e-3, help="learning rate (Adam)")
    b.add_argument("--stats-sequences", type=int, default=150, help=STATS_HELP)
    b.add_argument("--sequence-length", type=int, default=256, help=LENGTH_HELP)
    b.add_argument("--min-agreement", type=float, default=0.96,
                   help="thresholds keep at least this agreement with full-depth tokens")
    b.add_argument("--check-prompts", type=int, default=32,
                   help="calm: decode this many sampled prompts with the exported bundle on "
                        "onnxruntime and tighten the thresholds until the decoded agreement "
                        "meets --min-agreement (0: teacher-forced calibration only)")
    b.add_argument("--new-tokens", type=int, default=64, help="default tokens per prompt on the device")
    b.add_argument("--exit-policy", choices=("calm", "verify"), default="calm",
                   help="the device's default: calm (an exit's token is final) or verify "
                        "(exits draft, the last segment verifies: output = full depth)")
    b.add_argument("--call-costs", choices=("measured", "blocks"), default="measured",
                   help="cost of a segment call for the verify thresholds and --exits auto: "
                        "measured (three graphs timed on onnxruntime here) or blocks (a block "
                        "costs 1, a call 0.5)")
    b.add_argument("--monolithic", action="store_true", help="the full model as one graph, no exits")
    b.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    b.add_argument("--seed", type=int, default=0, help="random seed")
    c = s.add_parser("train-char", help="pretrain the character-level GPT on tinyshakespeare")
    c.add_argument("--out", required=True, help=".pt file to write")
    c.add_argument("--text", default=None, help="default ../shared/data/tinyshakespeare.txt")
    c.add_argument("--preset", choices=("small", "large", "deep"), default="small",
                   help="recipe: small (dim 64, 4 blocks, 800 steps: the shipped model), large "
                        "(dim 256, 6 blocks, 800 steps: compute-bound decoding, benchmarks) or "
                        "deep (dim 256, 10 blocks, early-exit loss 1.0: benchmarks)")
    c.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    c.add_argument("--batch-size", type=int, default=None,
                   help="sequences per step (default: the preset's)")
    c.add_argument("--lr", type=float, default=None,
                   help="peak learning rate, AdamW (default: the preset's)")
    c.add_argument("--dim", type=int, default=None, help="model width (default: the preset's)")
    c.add_argument("--layers", type=int, default=None, help="blocks (default: the preset's)")
    c.add_argument("--exit-loss-weight", type=float, default=None,
                   help="early-exit loss (LayerSkip): weight of the shared head's mean "
                        "cross-entropy after the earlier blocks (default: the preset's; 0 = none)")
    c.add_argument("--seed", type=int, default=0, help="random seed")
    return {"lm": cmd_lm}


def cmd_lm(a: argparse.Namespace) -> int:
    import torch

    from edge_ee.lm.sources import load_source
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    if a.lm_command == "train-char":
        from edge_ee.lm.char_gpt import char_preset, read_text, save_char_gpt, train_char_gpt
        from edge_ee.lm.sources import data_dir
        recipe = char_preset(a.preset, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
                             dim=a.dim, n_layers=a.layers, exit_loss_weight=a.exit_loss_weight,
                             seed=a.seed)
        text = read_text(a.text or data_dir() / "tinyshakespeare.txt")
        m, tok, info = train_char_gpt(text, recipe)
        save_char_gpt(m, tok, a.out, info)
        print(f"held-out loss {info['held_out_loss']:.3f} after {info['train_s']:.0f} s; wrote {a.out}")
        return 0
    from edge_ee.lm.train_exits import ExitTrainConfig, initial_heads, train_heads
    cfg = None
    if a.lm_command == "train-exits":  # check the recipe before the slow passes
        cfg = ExitTrainConfig(init=a.init, setting=a.setting, steps=a.steps, lr=a.lr,
                              batch_size=a.batch_size, eval_every=a.eval_every,
                              logit_scale=a.logit_scale, alpha=a.alpha,
                              fit_alpha=a.fit_alpha, alpha_by=a.alpha_by, seed=a.seed)
    src = load_source(a.model, a.tokenizer)
    m = src.model
    if a.lm_command == "generate":
        ids = src.encode(a.prompt) if a.prompt else [src.start]
        m.check_tokens(torch.tensor([ids]))
        print(src.decode(m.generate(ids, a.max_new_tokens)))
        return 0
    if a.lm_command == "build":
        from edge_ee.lm.build import LMBuildConfig, build_lm_bundle
        bcfg = LMBuildConfig(out=a.out, model=a.model, tokenizer=a.tokenizer, exits=_exits(a.exits),
                            init=a.init, logit_scale=a.logit_scale, train_steps=a.train_steps,
                            lr=a.lr, stats_sequences=a.stats_sequences,
                            sequence_length=a.sequence_length, min_agreement=a.min_agreement,
                            new_tokens=a.new_tokens, exit_policy=a.exit_policy,
                            call_costs=a.call_costs, head_target=a.head_target,
                            check_prompts=a.check_prompts, monolithic=a.monolithic,
                            overwrite=a.overwrite, seed=a.seed)
        path, info = build_lm_bundle(bcfg)
        print(f"wrote {path}" + (f"; thresholds {info['thresholds']}" if "thresholds" in info else ""))
        for i, att in enumerate(info.get("decoded_check", [])):
            print(f"decoded check {i}: agreement {att['decoded_agreement']:.4f} "
                  f"(target {bcfg.min_agreement}), exit rate {att['exit_rate']:.3f}")
        if info.get("exit_choice"):
            print("cost a token by exit block: " + ", ".join(
                f"{k}: {v:.1f}" for k, v in info["exit_choice"].items()))
        if info.get("call_costs"):
            print(f"call costs: {info['call_costs']}")
        return 0
    from edge_ee.lm.exit_init import (
        GROUPINGS,
        INITS,
        InitContext,
        check_exits,
        head_accuracy,
        held_out_features,
        init_weights,
        token_stats,
    )
    exits = check_exits(m, _exits(a.exits) if a.exits else range(1, m.config.n_layers))
    length = min(a.sequence_length, m.config.seq_len)
    seqs = m.sample(a.stats_sequences, length, seed=a.seed, start=src.start)
    stats = token_stats(m, seqs.split(16), exits)
    if a.lm_command == "init-eval":
        print("exit  " + "  ".join(f"{n:>18}" for n in INITS))
        feats, y = held_out_features(m, src.held_out, exits)
        for k in exits:
            ctx = InitContext(m, {g: stats[(k, g)] for g in GROUPINGS})
            accs = [head_accuracy(*init_weights(n, ctx), feats[k], y)[0] for n in INITS]
            print(f"K={k:<3} " + "  ".join(f"{v:>18.4f}" for v in accs))
        return 0
    assert cfg is not None
    heads = initial_heads(m, exits, cfg, stats, seqs[:16])
    train = m.sample(a.stats_sequences, length, seed=a.seed + 1, start=src.start)
    rows = train_heads(m, heads, train, src.held_out, cfg)
    if a.csv:
        import csv
        import os
        tmp = a.csv + ".tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, a.csv)
    for r in rows:
        print(f"step {r['step']:>5} exit {r['exit']} accuracy {r['accuracy']:.4f} loss {r['loss']:.3f}")
    return 0
