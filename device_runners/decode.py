"""Sequence positions: token-by-token decoding of a language-model bundle (`model.task ==
"language-model"`, `model.granularity == "position"`) as a granularity of the one
executor loop, torch-free.

A unit is a sequence position. `SequencePositions` is the active set: it carries the KV
cache (one preallocated (context, kv_heads, head_dim) array per layer and K and V), each
segment's fill (rows its layers have processed) and output states between
`executor.execute` calls, one call per decoding step. Segment s of a step gets the rows
[fill[s], end): the new token, plus the rows of earlier tokens that exited before s and
ride along (so a skipped segment costs no runtime call of its own). The prompt is one
step with every row and no exits (prefill). An exit decides with the rule baked into its
graph (`exit` = confidence > threshold), like every other granularity. Two policies use
the same graphs (`language_model.exit_policy` in the manifest, or `decode(..., policy=)`):

* `calm` — an exit's token is final; the rows that ride along later are *copied* states
  (`copied` leading rows are not updated by the blocks: each skipped layer computes its
  K,V from the exited state, as CALM / LayerSkip do);
* `verify` — an exit's token is a draft (self-speculative decoding, LayerSkip): the rows
  riding along are processed in full, so the KV cache is exact, and the last segment's
  per-row tokens verify the drafts; the first mismatch is replaced by the full model's
  token and what follows is rolled back (fills reset). Output = full-depth greedy
  decoding; the saving is the last segments' calls that confident drafts skip.

`--no-exit` runs every token through every segment (full depth). The input of one unit
row is an int64 (1, L + n) array: the prompt, then n slots of −1 to generate
(`load_prompts`). Golden self-check: `golden.py` (`position` cases) calls `decode`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from device_runners.backends import Backend
from device_runners.errors import InputSpecError
from device_runners.executor import ActiveSet, Outcome, execute, register_active_set
from device_runners.manifest import Bundle

TASK = "language-model"
POLICIES = ("calm", "verify")
GENERATE = -1  # a slot to generate in an input row


def is_language_model(bundle: Bundle) -> bool:
    return bundle.manifest["model"].get("task") == TASK


@register_active_set
class SequencePositions(ActiveSet):
    """The positions of one sequence; a call runs one decoding step."""

    granularity = "position"
    sequential = True

    def __init__(self, bundle: Bundle, x: np.ndarray, policy: str | None = None) -> None:
        super().__init__(bundle, x)
        lm = bundle.manifest["language_model"]
        self.policy = policy or lm.get("exit_policy", "calm")
        if self.policy not in POLICIES:
            raise InputSpecError(f"decoding policy {self.policy!r}; choose from {POLICIES}")
        self.ctx, dim = int(lm["context"]), int(lm["dim"])
        self.blocks = [tuple(s["blocks"]) for s in bundle.segments]
        self.thresholds = [s["exit"].get("threshold") for s in bundle.segments]
        self.last = len(self.blocks) - 1
        shape = (self.ctx, int(lm["kv_heads"]), int(lm["head_dim"]))
        self.cache = {(kv, i): np.zeros(shape, np.float32)
                      for kv in "kv" for i in range(self.blocks[-1][1])}
        self.state = [np.zeros((self.ctx, dim), np.float32) for _ in self.blocks[:-1]]
        self.fill = [0] * len(self.blocks)
        self.tokens: list[int] = []
        # per generated position: token, exit, confidence, margin to the nearest threshold
        self.rec: dict[str, list] = {"exit": [], "prediction": [], "confidence": [],
                                     "margin": []}
        self.end, self.running, self.rejected, self.prompt_len = 0, 0, 0, 0
        self.exits = self.append = self.verify = False
        self.margin = np.inf

    # --- one step -------------------------------------------------------------------
    def start(self, end: int, first: int, exits: bool, append: bool, verify: bool) -> None:
        """Rows up to `end` (exclusive) from segment `first`; `exits`: exits may decide;
        `append`: the last segment appends the next token; `verify`: check the drafts."""
        self.end, self.first, self.running = end, first, 1
        self.exits, self.append, self.verify = exits, append, verify
        self.margin = np.inf

    @property
    def count(self) -> int:
        return self.running

    def feeds(self, seg: dict[str, Any]) -> dict[str, np.ndarray]:
        s = seg["index"]
        a, b = self.blocks[s]
        st = self.fill[s]
        if s == 0:
            feeds = {"tokens": np.asarray([self.tokens[st:self.end]], np.int64)}
        else:
            copied = self.end - 1 - st if self.policy == "calm" and self.exits else 0
            feeds = {"h": self.state[s - 1][None, st:self.end], "copied": np.asarray([copied])}
        feeds["pos"] = np.asarray([st], np.int64)
        for i in range(a, b):
            feeds[f"past_k{i}"] = self.cache[("k", i)][:st]
            feeds[f"past_v{i}"] = self.cache[("v", i)][:st]
        return feeds

    def update(self, index: int, out: dict[str, np.ndarray], stop: str) -> None:
        a, b = self.blocks[index]
        st = self.fill[index]
        p = self.end - st
        for i in range(a, b):
            self.cache[("k", i)][st:self.end] = out[f"new_k{i}"]
            self.cache[("v", i)][st:self.end] = out[f"new_v{i}"]
        self.fill[index] = self.end
        if index < self.last:
            # `h` in bundles written before multi-exit LM bundles exported (one exit)
            self.state[index][st:self.end] = out["h_out" if "h_out" in out else "h"][0]
            if not self.exits:
                return
            conf = float(out["confidence"][0])
            self.margin = min(self.margin, abs(conf - self.thresholds[index]))
            if stop == "exits" and bool(out["exit"][0]):
                self._append(int(out["token"][0]), index, conf)
            return
        tokens, conf = out["token"].reshape(-1), out["confidence"].reshape(-1)
        self.running = 0
        if self.verify:  # rows followed by a token are followed by drafts: check them
            for j in range(p):
                pos = st + j + 1  # the position the row's prediction is for
                if pos >= len(self.tokens):
                    break
                if int(tokens[j]) != self.tokens[pos]:
                    self._rollback(pos, int(tokens[j]), float(conf[j]))
                    return
        if self.append:
            self._append(int(tokens[-1]), index, float(conf[-1]))

    def finish(self, backend: Backend, clock: Any) -> Outcome:
        """The step's outcome (the sequence's records are kept on the active set)."""
        n = len(self.rec["exit"])
        return Outcome(np.asarray(self.rec["exit"][n - 1:], np.int64),
                       np.asarray(self.rec["prediction"][n - 1:], np.int64),
                       np.asarray(self.rec["confidence"][n - 1:], np.float32), [], [])

    def _append(self, token: int, exit_index: int, conf: float) -> None:
        self.tokens.append(token)
        for k, v in zip(("exit", "prediction", "confidence", "margin"),
                        (exit_index, token, conf, self.margin), strict=True):
            self.rec[k].append(v)
        self.running = 0

    def _rollback(self, pos: int, token: int, conf: float) -> None:
        """The draft at `pos` is wrong: the full model's token replaces it, later ones go."""
        self.rejected += len(self.tokens) - pos
        keep = pos - self.prompt_len
        del self.tokens[pos:]
        for v in self.rec.values():
            del v[keep:]
        self.fill = [min(f, pos) for f in self.fill]
        self.margin = np.inf
        self._append(token, self.last, conf)

    # --- a whole sequence -------------------------------------------------------------
    @classmethod
    def drive(cls, bundle: Bundle, backend: Backend, x: np.ndarray, no_exit: bool,
              clock: Any = time.perf_counter_ns, policy: str | None = None) -> Outcome:
        """Decode one input row (prompt, then −1 slots): prefill, then one step per token;
        under `verify`, pending drafts are verified before the end (flush)."""
        row = np.asarray(x).reshape(-1)
        gen = row == GENERATE
        n_new = int(gen.sum())
        prompt = [int(t) for t in row[~gen]]
        units = cls(bundle, x, policy)
        check_prompt(len(prompt), n_new, units.ctx)
        units.tokens, units.prompt_len = list(prompt), len(prompt)
        lat: list[int] = []
        seg_lat: list[list[int]] = []

        verify = units.policy == "verify" and not no_exit

        def step(end: int, first: int, exits: bool, append: bool, check: bool) -> None:
            units.start(end, first, exits, append, check)
            t0 = clock()
            o = execute(bundle, backend, x, no_exit, clock, units)
            ns = clock() - t0
            done = len(units.rec["exit"])
            wasted = sum(lat[done:])  # rolled-back drafts: their time goes to the correction
            del lat[done:], seg_lat[done:]
            if len(lat) < done:  # one token appended: it carries the step's time
                lat.append(ns + wasted)
                seg_lat.append(list(o.segment_latency_ns))
            elif lat:  # a correction or a flush: the time goes to the last token
                lat[-1] += ns + wasted

        step(len(prompt), 0, False, True, False)  # prefill: all rows, the final head decides
        while True:
            n = len(units.rec["exit"])
            pending = verify and units.fill[-1] < len(units.tokens) - 1
            if n >= n_new and not pending:
                break
            if n >= n_new:  # verify the drafts still pending: rows up to the last token
                step(len(units.tokens) - 1, units.first_behind(), False, False, True)
            else:
                step(len(units.tokens), 0, not no_exit, True, verify)
        del units.tokens[units.prompt_len + n_new:]
        rec = {k: v[:n_new] for k, v in units.rec.items()}
        return Outcome(np.asarray(rec["exit"], np.int64), np.asarray(rec["prediction"], np.int64),
                       np.asarray(rec["confidence"], np.float32), [], [],
                       extra={"latency_ns": lat[:n_new], "segment_latency_ns": seg_lat[:n_new],
                              "margin": np.asarray(rec["margin"], np.float64),
                              "rejected_drafts": units.rejected, "policy": units.policy})

    def first_behind(self) -> int:
        """The first segment whose fill lags the last row that has a successor."""
        end = len(self.tokens) - 1
        return next(s for s, f in enumerate(self.fill) if f < end)


def check_prompt(prompt_len: int, n_new: int, ctx: int) -> None:
    if n_new < 1:
        raise InputSpecError(f"{n_new} tokens to generate; generate at least 1 token")
    if prompt_len < 1:
        raise InputSpecError("an empty prompt: give at least one token (the BOS token)")
    if prompt_len + n_new > ctx:
        raise InputSpecError(f"prompt of {prompt_len} tokens + {n_new} new tokens exceed the "
                             f"context of {ctx}; shorten the prompt or generate fewer")


def decode(bundle: Bundle, backend: Backend, prompt: np.ndarray | list[int],
           max_new_tokens: int, no_exit: bool = False, policy: str | None = None) -> Outcome:
    """Greedy decoding of `prompt` (token ids) for `max_new_tokens` tokens."""
    p = np.asarray(prompt, np.int64).reshape(-1)
    check_prompt(len(p), max_new_tokens, int(bundle.manifest["language_model"]["context"]))
    row = np.concatenate((p, np.full(max_new_tokens, GENERATE, np.int64)))[None]
    return SequencePositions.drive(bundle, backend, row, no_exit, time.perf_counter_ns, policy)


def load_prompts(bundle: Bundle, path: Any, limit: int | None,
                 new_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Input rows (N, L + n) int64 — the prompts, then n slots of −1 — and optional labels
    (N, n) from an .npz ('x' prompts (N, L), optional 'max_new_tokens', optional 'y'
    reference continuations) or the bundle's golden prompts."""
    lm = bundle.manifest["language_model"]
    n_new = int(lm["default_new_tokens"])
    y = None
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
                y = z["y"] if "y" in z.files else None
        except (OSError, ValueError) as err:
            raise InputSpecError(f"cannot read {path}: {err}; pass an .npz file") from err
    n_new = new_tokens or n_new
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        raise InputSpecError(f"prompts must be an integer (N, L) array, got {x.dtype} {x.shape}")
    v = len(bundle.manifest["classes"])
    if x.size and (x.min() < 0 or x.max() >= v):
        raise InputSpecError(f"prompt token ids must be in 0..{v - 1} (this bundle's vocabulary); "
                             "encode the prompts with the model's own tokenizer")
    check_prompt(x.shape[1], n_new, int(lm["context"]))
    if limit is not None:
        x, y = x[:limit], None if y is None else y[:limit]
    rows = np.concatenate((x.astype(np.int64), np.full((len(x), n_new), GENERATE, np.int64)), 1)
    return rows, y
