"""Initialisations of an exit LM head after decoder block K (METHODS §5), by name.

Every strategy returns the head's weight W (V, D) and bias b (V,), used as
logit = W · rms_final(R_{i,K}) + b (the model's final RMSNorm is applied before the head):

* `random`  — uniform U(−1/√D, 1/√D) (nn.Linear's default), zero bias;
* `copy`    — the model's final LM head, zero bias;
* `class-aware-target` / `class-aware-input` — W_v = M_v = mean of R_{i,K} over S_v and
  η_v = (N₀/2)·ln P(v) − ½‖M_v‖², with S_v = positions whose *next* token is v (target
  grouping, the detector's reading) or whose *input* token is v (the slide's reading);
  N₀ = 2σ², σ² the pooled within-class variance per dimension; P(v) Laplace-smoothed so
  unseen tokens keep a finite bias; unseen tokens get a zero column or the copy column;
* `mix` — α·class-aware(target) + (1 − α)·copy (α = 0.6 nothing frozen, 0.8 frozen).

Statistics stream over token batches into `edge_ee.exits.stats.ClassStats` (float64 sums,
counts and squared norms; partial statistics merge by adding, as for E2CM).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from edge_ee.errors import CalibrationError, ConfigError, ModelError
from edge_ee.exits.stats import ClassStats
from edge_ee.lm.model import DecoderLM

GROUPINGS = ("target", "input")
MIX_ALPHA = {"nothing": 0.6, "backbone": 0.8}  # frozen setting → α (METHODS §5)


def check_exits(model: DecoderLM, exits: Iterable[int]) -> tuple[int, ...]:
    """Exit points K (an exit after block K, 1 ≤ K < n_layers)."""
    n = model.config.n_layers
    out = tuple(int(k) for k in exits)
    bad = [k for k in out if not 1 <= k < n]
    if bad or not out:
        raise ModelError(f"exits after blocks {bad or '[]'} do not exist: this model has "
                         f"{n} blocks, so an exit goes after block 1..{n - 1}")
    return out


@torch.no_grad()
def exit_features(model: DecoderLM, tokens: torch.Tensor, exits: tuple[int, ...]
                  ) -> dict[int, torch.Tensor]:
    """rms_final(R_{·,K}) for each exit K: (B, T, D)."""
    hs = model.hidden_states(tokens)
    return {k: model.norm(hs[k - 1]) for k in exits}


@torch.no_grad()
def token_stats(model: DecoderLM, batches: Iterable[torch.Tensor], exits: Iterable[int]
                ) -> dict[tuple[int, str], ClassStats]:
    """One streaming pass: per exit K and grouping, class statistics of rms_final(R_{i,K})
    over positions i < T−1 (the last position has no next token)."""
    exits = check_exits(model, exits)
    c = model.config
    stats = {(k, g): ClassStats(c.vocab_size, c.dim) for k in exits for g in GROUPINGS}
    for tokens in batches:
        feats = exit_features(model, tokens, exits)
        labels = {"input": tokens[:, :-1].reshape(-1), "target": tokens[:, 1:].reshape(-1)}
        for k in exits:
            x = feats[k][:, :-1].reshape(-1, c.dim)
            for g in GROUPINGS:
                stats[(k, g)].update(x, labels[g])
    return stats


@dataclass(frozen=True)
class InitContext:
    """What a strategy may use: the model, the exit's statistics, the options."""

    model: DecoderLM
    stats: dict[str, ClassStats] | None  # grouping → statistics at this exit
    alpha: float = 0.6
    smoothing: float = 1.0
    unseen: str = "zero"  # zero | copy
    use_bias: bool = True
    seed: int = 0


class HeadInit:
    """Interface: `weights(ctx) -> (W (V, D), b (V,))` in float32."""

    name = ""

    def weights(self, ctx: InitContext) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


INITS: dict[str, HeadInit] = {}


def register_init(cls: type[HeadInit]) -> type[HeadInit]:
    INITS[cls.name] = cls()
    return cls


@register_init
class RandomInit(HeadInit):
    name = "random"

    def weights(self, ctx: InitContext) -> tuple[torch.Tensor, torch.Tensor]:
        c = ctx.model.config
        g = torch.Generator().manual_seed(ctx.seed)
        bound = 1.0 / math.sqrt(c.dim)
        w = (torch.rand(c.vocab_size, c.dim, generator=g) * 2 - 1) * bound
        return w, torch.zeros(c.vocab_size)


@register_init
class CopyInit(HeadInit):
    name = "copy"

    def weights(self, ctx: InitContext) -> tuple[torch.Tensor, torch.Tensor]:
        w = ctx.model.output.weight.detach().clone().float()
        return w, torch.zeros(w.shape[0])


def class_aware(st: ClassStats, fallback: torch.Tensor, smoothing: float, unseen: str,
                use_bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """M_v and η_v = (N₀/2)·ln P(v) − ½‖M_v‖² (float64 maths, float32 result)."""
    if st.total == 0:
        raise CalibrationError("no positions in the statistics; pass at least one sequence "
                               "of two or more tokens")
    if unseen not in ("zero", "copy"):
        raise ConfigError(f"unseen={unseen!r}; choose 'zero' or 'copy'")
    m = st.means()
    missing = st.counts == 0
    if unseen == "copy":
        m[missing] = fallback.double()[missing]
    n0 = 2.0 * st.pooled_within_variance()
    prior = st.priors(smoothing).clamp_min(1e-300)
    b = 0.5 * n0 * prior.log() - 0.5 * (m * m).sum(1)
    if not use_bias:
        b = torch.zeros_like(b)
    return m.float(), b.float()


class _ClassAware(HeadInit):
    grouping = ""

    def weights(self, ctx: InitContext) -> tuple[torch.Tensor, torch.Tensor]:
        if not ctx.stats or self.grouping not in ctx.stats:
            raise CalibrationError(f"{self.name} needs statistics grouped by {self.grouping}; "
                                   "run the statistics pass (token_stats) first")
        return class_aware(ctx.stats[self.grouping], ctx.model.output.weight.detach(),
                           ctx.smoothing, ctx.unseen, ctx.use_bias)


@register_init
class ClassAwareTarget(_ClassAware):
    name = "class-aware-target"
    grouping = "target"


@register_init
class ClassAwareInput(_ClassAware):
    name = "class-aware-input"
    grouping = "input"


@register_init
class MixInit(HeadInit):
    """α·class-aware(target) + (1 − α)·copy, weights and biases alike."""

    name = "mix"

    def weights(self, ctx: InitContext) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0.0 <= ctx.alpha <= 1.0:
            raise ConfigError(f"alpha {ctx.alpha} is outside [0, 1]")
        wa, ba = INITS["class-aware-target"].weights(ctx)
        wc, bc = INITS["copy"].weights(ctx)
        return ctx.alpha * wa + (1 - ctx.alpha) * wc, ctx.alpha * ba + (1 - ctx.alpha) * bc


def init_weights(name: str, ctx: InitContext) -> tuple[torch.Tensor, torch.Tensor]:
    if name not in INITS:
        raise ConfigError(f"unknown exit-head init {name!r}; choose from {sorted(INITS)}")
    return INITS[name].weights(ctx)


@torch.no_grad()
def held_out_features(model: DecoderLM, sequences: Iterable[torch.Tensor], exits: Iterable[int]
                      ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """One forward pass over held-out sequences: ({K: (N, D) features}, (N,) next tokens)."""
    exits = tuple(exits)
    feats: dict[int, list[torch.Tensor]] = {k: [] for k in exits}
    ys = []
    for tokens in sequences:
        f = exit_features(model, tokens, exits)
        for k in exits:
            feats[k].append(f[k][:, :-1].reshape(-1, f[k].shape[-1]))
        ys.append(tokens[:, 1:].reshape(-1))
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(ys)


@torch.no_grad()
def head_accuracy(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor
                  ) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) of logits x·Wᵀ + b against next tokens y."""
    z = x @ w.T + b
    return (float((z.argmax(-1) == y).double().mean()),
            float(torch.nn.functional.cross_entropy(z, y)))


def next_token_accuracy(model: DecoderLM, w: torch.Tensor, b: torch.Tensor, exit_k: int,
                        sequences: Iterable[torch.Tensor]) -> tuple[float, float]:
    """(top-1 next-token accuracy, mean cross-entropy) of the head (W, b) at exit K."""
    feats, y = held_out_features(model, sequences, (exit_k,))
    return head_accuracy(w, b, feats[exit_k], y)
