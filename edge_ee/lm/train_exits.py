"""Training exit LM heads from an initialisation, with curves of next-token accuracy and
loss versus Adam steps, in the two settings of METHODS §5:

* `backbone` — all but the LM heads frozen (only the exit heads learn; features are
  computed once, so a run costs only the heads' matmuls);
* `nothing`  — nothing frozen: backbone, exit heads and the final head learn together on
  the mean of every head's cross-entropy.

`logit_scale` decides how the class-aware logits are scaled before training (the
investigation of why class-aware init loses its lead after a few steps): `none` keeps
W·R + η as METHODS §5 writes it (that is (N₀/2)× the detector's log-posterior, far too
sharp: its cross-entropy is ~30 nats at zero training); `posterior` divides by N₀/2 (the
exact MAP log-posterior of the AWGN model); `fitted` fits one temperature per head by
NLL on the statistics data (no held-out data used). Scaling never changes the argmax,
so zero-training accuracy is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edge_ee.errors import ConfigError
from edge_ee.lm.exit_init import INITS, InitContext, check_exits, exit_features, init_weights
from edge_ee.lm.model import DecoderLM

log = logging.getLogger(__name__)
SETTINGS = ("backbone", "nothing")
TARGETS = ("next", "full-depth")
LOGIT_SCALES = ("none", "posterior", "fitted")
ALPHA_BY = ("nll", "accuracy")


@dataclass(frozen=True)
class ExitTrainConfig:
    """One training run (CLI flags map 1:1)."""

    init: str = "class-aware-target"
    setting: str = "backbone"
    steps: int = 200
    lr: float = 1e-3
    batch_size: int = 8
    eval_every: int = 10
    logit_scale: str = "none"
    alpha: float | None = None  # None: 0.6 nothing frozen, 0.8 backbone frozen
    fit_alpha: bool = False  # mix: choose α in {0, 0.1, …, 1} on the statistics data …
    alpha_by: str = "nll"  # … by the lowest NLL, or the best accuracy (ties: lowest NLL)
    # what the heads learn: the text's next token ("next") or full depth's greedy token
    # ("full-depth": what an early-exit decoder must agree with; backbone frozen only)
    target: str = "next"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"unknown exit-head init {self.init!r}; choose from {sorted(INITS)}")
        if self.setting not in SETTINGS:
            raise ConfigError(f"setting {self.setting!r}; choose from {SETTINGS}")
        if self.logit_scale not in LOGIT_SCALES:
            raise ConfigError(f"logit_scale {self.logit_scale!r}; choose from {LOGIT_SCALES}")
        if self.target not in TARGETS:
            raise ConfigError(f"head target {self.target!r}; choose from {TARGETS}")
        if self.alpha_by not in ALPHA_BY:
            raise ConfigError(f"alpha_by {self.alpha_by!r}; choose from {ALPHA_BY}")
        if self.target == "full-depth" and self.setting != "backbone":
            raise ConfigError("target 'full-depth' needs the backbone frozen (setting 'backbone'): "
                              "full depth must not move while the heads learn it")
        if self.steps < 0 or self.batch_size < 1 or self.eval_every < 1 or self.lr <= 0:
            raise ConfigError("steps ≥ 0, batch_size ≥ 1, eval_every ≥ 1 and lr > 0 are needed")


def fit_temperature(z: torch.Tensor, y: torch.Tensor, iters: int = 50) -> float:
    """T minimising NLL of softmax(z/T) (one scalar, L-BFGS on log T)."""
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


class ExitHeads(nn.Module):
    """One nn.Linear(D → V, bias) per exit K, reading rms_final(R_{·,K})."""

    def __init__(self, model: DecoderLM, exits: Sequence[int]) -> None:
        super().__init__()
        c = model.config
        self.exits = tuple(exits)
        self.heads = nn.ModuleList(nn.Linear(c.dim, c.vocab_size) for _ in self.exits)

    def set_weights(self, i: int, w: torch.Tensor, b: torch.Tensor) -> None:
        with torch.no_grad():
            self.heads[i].weight.copy_(w)
            self.heads[i].bias.copy_(b)


def initial_heads(model: DecoderLM, exits: Sequence[int], cfg: ExitTrainConfig,
                  stats: dict, calib: torch.Tensor | None = None) -> ExitHeads:
    """Heads initialised by `cfg.init`, scaled by `cfg.logit_scale` (stats: (K, grouping) →
    ClassStats from `token_stats`; calib: token sequences for the `fitted` temperature)."""
    exits = check_exits(model, exits)
    alpha = cfg.alpha if cfg.alpha is not None else (0.6 if cfg.setting == "nothing" else 0.8)
    heads = ExitHeads(model, exits)
    for i, k in enumerate(exits):
        ctx = InitContext(model, {g: s for (kk, g), s in stats.items() if kk == k},
                          alpha=alpha, seed=cfg.seed + k)
        if cfg.init == "mix" and cfg.logit_scale != "none":
            # scale the class-aware part first, then mix it with the copy head
            wa, ba = _scaled(model, k, init_weights("class-aware-target", ctx), ctx, cfg, calib)
            wc, bc = init_weights("copy", ctx)
            a = (_fitted_alpha(model, k, (wa, ba), (wc, bc), calib, cfg.alpha_by)
                 if cfg.fit_alpha else alpha)
            w, b = a * wa + (1 - a) * wc, a * ba + (1 - a) * bc
        elif cfg.init.startswith("class-aware"):
            w, b = _scaled(model, k, init_weights(cfg.init, ctx), ctx, cfg, calib)
        else:
            w, b = init_weights(cfg.init, ctx)
        heads.set_weights(i, w, b)
    return heads


@torch.no_grad()
def _fitted_alpha(model: DecoderLM, k: int, ca: tuple[torch.Tensor, torch.Tensor],
                  copy: tuple[torch.Tensor, torch.Tensor], calib: torch.Tensor | None,
                  by: str = "nll") -> float:
    """α of the mix with the lowest NLL (`by="nll"`) or the best top-1 accuracy, ties to the
    lower NLL (`by="accuracy"`: α = 0 and 1 are the parts, so the mix starts no worse than
    the better of them), on the statistics sequences (no held-out data)."""
    if calib is None:
        raise ConfigError("fit_alpha needs calibration sequences")
    x = exit_features(model, calib, (k,))[k][:, :-1].reshape(-1, ca[0].shape[1])
    y = calib[:, 1:].reshape(-1)
    za, zc = x @ ca[0].T + ca[1], x @ copy[0].T + copy[1]
    grid = [i / 10 for i in range(11)]
    nll = [float(F.cross_entropy(a * za + (1 - a) * zc, y)) for a in grid]
    if by == "accuracy":
        acc = [float(((a * za + (1 - a) * zc).argmax(-1) == y).double().mean()) for a in grid]
        best = grid[max(range(len(grid)), key=lambda i: (acc[i], -nll[i]))]
    else:
        best = grid[min(range(len(grid)), key=nll.__getitem__)]
    log.info("exit %d: fitted mix alpha %.1f (by %s)", k, best, by)
    return best


def _scaled(model: DecoderLM, k: int, wb: tuple[torch.Tensor, torch.Tensor], ctx: InitContext,
            cfg: ExitTrainConfig, calib: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    w, b = wb
    if cfg.logit_scale == "posterior":
        half_n0 = ctx.stats["target"].pooled_within_variance()  # N₀/2 = σ²
        return w / half_n0, b / half_n0
    if cfg.logit_scale == "fitted":
        if calib is None:
            raise ConfigError("logit_scale 'fitted' needs calibration sequences")
        x = exit_features(model, calib, (k,))[k][:, :-1].reshape(-1, w.shape[1])
        t = fit_temperature(x @ w.T + b, calib[:, 1:].reshape(-1))
        return w / t, b / t
    return w, b


@torch.no_grad()
def evaluate(model: DecoderLM, heads: ExitHeads, sequences: Sequence[torch.Tensor]
             ) -> dict[int, tuple[float, float]]:
    """Exit K → (next-token accuracy, mean CE) on `sequences` (each (1, T))."""
    hit = {k: 0 for k in heads.exits}
    loss = {k: 0.0 for k in heads.exits}
    n = 0
    for s in sequences:
        feats = exit_features(model, s, heads.exits)
        y = s[:, 1:].reshape(-1)
        for i, k in enumerate(heads.exits):
            z = heads.heads[i](feats[k][:, :-1].reshape(-1, feats[k].shape[-1]))
            hit[k] += int((z.argmax(-1) == y).sum())
            loss[k] += float(F.cross_entropy(z, y, reduction="sum"))
        n += y.numel()
    return {k: (hit[k] / max(n, 1), loss[k] / max(n, 1)) for k in heads.exits}


def train_heads(model: DecoderLM, heads: ExitHeads, train: torch.Tensor,
                held_out: Sequence[torch.Tensor], cfg: ExitTrainConfig) -> list[dict]:
    """Adam on the exit heads (and the backbone when nothing is frozen); the curve is a list
    of {step, exit, accuracy, loss} rows on `held_out`, at step 0 and every eval_every."""
    g = torch.Generator().manual_seed(cfg.seed)
    frozen = cfg.setting == "backbone"
    params = list(heads.parameters()) + ([] if frozen else list(model.parameters()))
    opt = torch.optim.Adam(params, lr=cfg.lr)
    model.train(not frozen)
    rows: list[dict] = []

    def record(step: int) -> None:
        model.eval()
        for k, (acc, ce) in evaluate(model, heads, held_out).items():
            rows.append({"step": step, "exit": k, "accuracy": acc, "loss": ce})
        model.train(not frozen)

    record(0)
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, len(train), (cfg.batch_size,), generator=g)
        batch = train[idx]
        y = batch[:, 1:].reshape(-1)
        with torch.set_grad_enabled(not frozen):
            hs = model.hidden_states(batch)
        if cfg.target == "full-depth":
            y = model.head(hs[-1])[:, :-1].argmax(-1).reshape(-1)
        losses = [F.cross_entropy(h(model.norm(hs[k - 1])[:, :-1].reshape(-1, hs[0].shape[-1])), y)
                  for h, k in zip(heads.heads, heads.exits, strict=True)]
        if not frozen:
            losses.append(F.cross_entropy(model.head(hs[-1])[:, :-1].reshape(-1, model.config.vocab_size), y))
        loss = torch.stack(losses).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            record(step)
            log.info("%s %s step %d loss %.3f", cfg.init, cfg.setting, step, loss.item())
    model.eval()
    return rows
