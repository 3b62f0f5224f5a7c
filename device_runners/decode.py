"""Token-by-token early-exit decoding of a language-model bundle (`model.task ==
"language-model"`), torch-free: the loop, its golden self-check and the measured run.

The loop walks the segments with one active token and explicit KV-cache state:
* the prompt runs every segment at once (prefill, no exits);
* each new token runs segment 0; at each exit whose flag is set (confidence > the
  threshold baked into the graph) the token is final and later segments are skipped;
* a skipped segment's KV rows are filled lazily: the exited hidden state is kept
  (`exit_state`) and, the next time a token reaches that segment, the missing positions
  ride along as `copied` rows (each skipped layer computes its K,V from the copied
  state, as CALM / LayerSkip do) — no extra runtime call.
The cache is one preallocated (context, kv_heads, head_dim) array per layer and K and V;
a graph gets the filled prefix (a contiguous view) and returns only the new rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device_runners.backends import Backend, open_backend
from device_runners.errors import BackendError, InputSpecError, SelfCheckError
from device_runners.manifest import Bundle
from device_runners.results import atomic_write_json, results_document
from device_runners.session import SessionConfig, measure_window

TASK = "language-model"


def is_language_model(bundle: Bundle) -> bool:
    return bundle.manifest["model"].get("task") == TASK


@dataclass
class Decoded:
    """One prompt's continuation: per new token its id, exit (segment index), step time."""

    tokens: list[int] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    step_ns: list[int] = field(default_factory=list)
    prefill_ns: int = 0


def decode(bundle: Bundle, backend: Backend, prompt: np.ndarray | list[int],
           max_new_tokens: int, no_exit: bool = False) -> Decoded:
    """Greedy early-exit decoding of `prompt` (token ids) for `max_new_tokens` tokens."""
    lm = bundle.manifest["language_model"]
    ctx, kvh, hd, dim = lm["context"], lm["kv_heads"], lm["head_dim"], lm["dim"]
    segs = [(s["index"], *s["blocks"]) for s in bundle.segments]
    prompt = [int(t) for t in np.asarray(prompt).reshape(-1)]
    if max_new_tokens < 1:
        raise InputSpecError(f"max_new_tokens is {max_new_tokens}; generate at least 1 token")
    if not prompt:
        raise InputSpecError("an empty prompt: give at least one token (the BOS token)")
    if len(prompt) + max_new_tokens > ctx:
        raise InputSpecError(f"prompt of {len(prompt)} tokens + {max_new_tokens} new tokens "
                             f"exceed the context of {ctx}; shorten the prompt or generate fewer")
    n_layers = segs[-1][2]
    cache = {(kv, i): np.zeros((ctx, kvh, hd), np.float32) for kv in "kv" for i in range(n_layers)}
    fill = [0] * len(segs)  # rows of each segment's layers already in the cache
    exit_state = np.zeros((ctx, dim), np.float32)
    out = Decoded()

    def call(si: int, lead: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        _, a, b = segs[si]
        feeds = dict(lead)
        for i in range(a, b):
            feeds[f"past_k{i}"] = cache[("k", i)][:fill[si]]
            feeds[f"past_v{i}"] = cache[("v", i)][:fill[si]]
        res = backend.run(si, feeds)
        p = res[f"new_k{a}"].shape[0]
        for i in range(a, b):
            cache[("k", i)][fill[si]:fill[si] + p] = res[f"new_k{i}"]
            cache[("v", i)][fill[si]:fill[si] + p] = res[f"new_v{i}"]
        fill[si] += p
        return res

    t0 = time.perf_counter_ns()
    res = call(0, {"tokens": np.asarray([prompt], np.int64), "pos": np.zeros(1, np.int64)})
    for si in range(1, len(segs)):
        res = call(si, {"h": res["h"], "pos": np.zeros(1, np.int64),
                        "copied": np.zeros(1, np.int64)})
    out.prefill_ns = time.perf_counter_ns() - t0
    tok, cur, where = int(res["token"][0]), len(prompt), len(segs) - 1
    while True:
        out.tokens.append(tok)
        out.exits.append(where)  # the exit that decided this token (prefill: the final one)
        if len(out.tokens) == max_new_tokens:
            break
        t0 = time.perf_counter_ns()
        res = call(0, {"tokens": np.asarray([[tok]], np.int64), "pos": np.asarray([cur], np.int64)})
        si = 0
        while not (bool(res["exit"][0]) and not no_exit) and si + 1 < len(segs):
            si += 1
            st = fill[si]
            h = np.concatenate((exit_state[st:cur][None], res["h"][:, -1:]), 1)
            res = call(si, {"h": h, "pos": np.asarray([st], np.int64),
                            "copied": np.asarray([cur - st], np.int64)})
        if si + 1 < len(segs):
            exit_state[cur] = res["h"][0, -1]
        tok, cur, where = int(res["token"][0]), cur + 1, si
        out.step_ns.append(time.perf_counter_ns() - t0)
        out.confidence.append(float(res["confidence"][0]))
    return out


def self_check(bundle: Bundle, backend: Backend) -> dict[str, Any]:
    """Decode the golden prompts; tokens and exits must equal torch's at export."""
    g = bundle.golden()
    n = int(bundle.manifest["golden"]["new_tokens"])
    worst = 0
    for i, prompt in enumerate(g["prompts"]):
        for mode, no_exit in (("exit", False), ("full", True)):
            d = decode(bundle, backend, prompt, n, no_exit)
            want_t, want_e = g[f"p{i}/{mode}/tokens"], g[f"p{i}/{mode}/exits"]
            bad = int((np.asarray(d.tokens) != want_t).sum() + (np.asarray(d.exits) != want_e).sum())
            if bad:
                raise SelfCheckError(
                    f"golden prompt {i} ({mode}): {bad} tokens/exits differ from torch's "
                    f"(got {d.tokens[:8]}…, want {want_t[:8].tolist()}…); this runtime does "
                    "not reproduce the bundle — check the onnxruntime version or re-export")
            worst = max(worst, bad)
    return {"passed": True, "prompts": len(g["prompts"]), "new_tokens": n}


def load_prompts(bundle: Bundle, path: Any, limit: int | None) -> tuple[np.ndarray, int]:
    """(prompts (N, L) int64, new tokens per prompt) from an .npz ('x' prompts,
    optional 'max_new_tokens') or the bundle's golden prompts."""
    n_new = int(bundle.manifest["language_model"]["default_new_tokens"])
    if path is None:
        x = bundle.golden()["prompts"]
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise InputSpecError(f"{path} has no array 'x'; save prompts as "
                                         "np.savez(f, x=int64 (N, L) token ids)")
                x = z["x"]
                n_new = int(z["max_new_tokens"]) if "max_new_tokens" in z.files else n_new
        except (OSError, ValueError) as err:
            raise InputSpecError(f"cannot read {path}: {err}; pass an .npz file") from err
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        raise InputSpecError(f"prompts must be an integer (N, L) array, got {x.dtype} {x.shape}")
    v = len(bundle.manifest["classes"])
    if x.size and (x.min() < 0 or x.max() >= v):
        raise InputSpecError(f"prompt token ids must be in 0..{v - 1} (this bundle's vocabulary); "
                             "encode the prompts with the model's own tokenizer")
    return (x if limit is None else x[:limit]).astype(np.int64), n_new


FIELDS = ("prompt", "pass", "tokens", "exits", "step_ns", "prefill_ns")


def run_language_model(args: argparse.Namespace, bundle: Bundle, t_init_ns: int,
                       session_config: SessionConfig, progress: Any, log: Any) -> int:
    """The language-model branch of `edge-ee-run`: self-check, then timed decoding passes
    (profile, power, warm-up via `session.measure_window`), raw results per prompt."""
    if args.backend not in (None, "onnxruntime"):
        raise BackendError("language-model bundles run on onnxruntime only")
    backend = open_backend(bundle, args.backend, args.threads)
    init_ns = time.perf_counter_ns() - t_init_ns
    check = None if args.skip_self_check else self_check(bundle, backend)
    x, n_new = load_prompts(bundle, args.input, args.limit)
    rec: dict[str, list] = {f: [] for f in FIELDS}
    prog = progress(len(x))

    def warm() -> int | None:
        if not len(x):
            return None
        t0 = time.perf_counter_ns()
        decode(bundle, backend, x[0], min(n_new, 4), session_config.no_exit)
        first = time.perf_counter_ns() - t0
        for _ in range(max(session_config.warmup_runs - 1, 0)):
            decode(bundle, backend, x[0], min(n_new, 4), session_config.no_exit)
        return first

    def passes() -> tuple[dict[str, list], None, bool]:
        t0, n_pass = time.monotonic(), 0
        while True:
            try:
                for i, p in enumerate(x):
                    d = decode(bundle, backend, p, n_new, session_config.no_exit)
                    for k, v in zip(FIELDS, (i, n_pass, d.tokens, d.exits, d.step_ns,
                                             d.prefill_ns), strict=True):
                        rec[k].append(v)
                    prog()
            except KeyboardInterrupt:
                return rec, None, False
            n_pass += 1
            if not len(x) or (len(rec["prompt"]) >= session_config.min_runs
                              and time.monotonic() - t0 >= session_config.min_duration_s):
                return rec, None, True

    run = measure_window(session_config, warm, passes, log)
    run["samples"] = rec
    protocol = {"mode": "decode", "batch_size": 1, "warmup_runs": args.warmup_runs,
                "no_exit": args.no_exit, "min_runs": args.min_runs,
                "min_duration_s": args.min_duration_s, "pin_cores": session_config.pin_cores,
                "input": str(args.input) if args.input else "golden", "prompts": len(x),
                "new_tokens": n_new}
    results = results_document(bundle, backend, args.threads, protocol, init_ns, check, run,
                               task=TASK)
    atomic_write_json(args.out, results)
    if not args.quiet:
        steps = sum(len(s) for s in rec["step_ns"])
        secs = sum(sum(s) for s in rec["step_ns"]) / 1e9
        print(f"\nwrote {args.out} ({len(rec['prompt'])} prompts, {steps} steps, "
              f"{steps / secs if secs else 0:.1f} tokens/s"
              f"{'' if run['complete'] else ', INCOMPLETE: interrupted'})", file=sys.stderr)
    return 0 if run["complete"] else 130
