"""A character-level GPT (the Llama-style `DecoderLM`) pretrained on tinyshakespeare.

The toolkit ships its trained weights (`edge_ee/assets/char_gpt.pt` + `.sha256`);
`edge-ee lm train-char` retrains them (a few minutes on 2 cores). The first 90 % of the
text trains, the last 10 % is the held-out slice every evaluation uses.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from edge_ee.errors import ConfigError, DataError, ModelError
from edge_ee.lm.model import DecoderLM, LMConfig
from edge_ee.models.weights import save_with_sidecar, verify_sidecar

log = logging.getLogger(__name__)
ASSET = Path(__file__).resolve().parents[1] / "assets" / "char_gpt.pt"
TRAIN_FRACTION = 0.9


@dataclass(frozen=True)
class CharTokenizer:
    """One token per character of a fixed alphabet."""

    chars: str

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        idx = {c: i for i, c in enumerate(self.chars)}
        bad = sorted({c for c in text if c not in idx})
        if bad:
            raise DataError(f"characters {bad[:10]} are not in the model's alphabet; "
                            "remove them or retrain on text that has them")
        return [idx[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def piece_names(self) -> list[str]:
        return list(self.chars)


def read_text(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"text file {p} not found; pass tinyshakespeare.txt "
                        "(../shared/data/tinyshakespeare.txt)")
    return p.read_text(encoding="utf-8")


def split_ids(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) = first 90 %, last 10 %."""
    n = int(len(ids) * TRAIN_FRACTION)
    return ids[:n], ids[n:]


@dataclass(frozen=True)
class CharTrainConfig:
    """Pretraining recipe (CLI flags map 1:1)."""

    steps: int = 800
    batch_size: int = 24
    context: int = 128
    lr: float = 3e-3
    dim: int = 64
    hidden_dim: int = 172
    n_layers: int = 4
    n_heads: int = 4
    warmup_steps: int = 0
    # Early-exit loss (LayerSkip, Elhoushi et al. 2024): the shared final norm + LM head
    # read every earlier block too, and their mean cross-entropy is added with this weight,
    # so early blocks learn to predict what full depth predicts (0: plain pretraining).
    exit_loss_weight: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.context, self.dim, self.hidden_dim,
               self.n_layers, self.n_heads) <= 0 or self.lr <= 0 or self.warmup_steps < 0 \
                or self.exit_loss_weight < 0:
            raise ConfigError(f"char GPT recipe has a non-positive size or rate: {self}; "
                              "check the flags")
        if self.dim % self.n_heads:
            raise ConfigError(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}; "
                              "pick sizes that divide")
        if self.warmup_steps >= self.steps:
            raise ConfigError(f"warmup_steps {self.warmup_steps} must be below steps {self.steps}")


# `small`: the shipped model (tests, the default). `large`: a model where a decoding step
# costs FLOPs rather than per-call overhead (about 4.8 M parameters, dim 256, 6 blocks;
# benchmarks only), still pretrained on 2 CPU cores in minutes. `deep`: 10 such blocks
# pretrained with the early-exit loss (LayerSkip), the model early-exit decoding gains
# most on (docs/bench-lm/decoding.md; ~24 min on 2 cores).
CHAR_PRESETS: dict[str, CharTrainConfig] = {
    "small": CharTrainConfig(),
    "large": CharTrainConfig(steps=800, batch_size=16, context=128, lr=2e-3, dim=256,
                             hidden_dim=688, n_layers=6, n_heads=8, warmup_steps=50),
    "deep": CharTrainConfig(steps=800, batch_size=16, context=128, lr=2e-3, dim=256,
                            hidden_dim=688, n_layers=10, n_heads=8, warmup_steps=50,
                            exit_loss_weight=1.0),
}


def char_preset(name: str, **overrides: int | float | None) -> CharTrainConfig:
    """The named recipe with the given fields replaced (None leaves a field as is)."""
    if name not in CHAR_PRESETS:
        raise ConfigError(f"char GPT preset {name!r}; choose from {sorted(CHAR_PRESETS)}")
    return replace(CHAR_PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def train_char_gpt(text: str, cfg: CharTrainConfig = CharTrainConfig()
                   ) -> tuple[DecoderLM, CharTokenizer, dict]:
    """AdamW with cosine decay on random windows of the first 90 % of `text`."""
    tok = CharTokenizer("".join(sorted(set(text))))
    ids = torch.tensor(tok.encode(text))
    train, held = split_ids(ids)
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    c = LMConfig(dim=cfg.dim, hidden_dim=cfg.hidden_dim, n_layers=cfg.n_layers,
                 n_heads=cfg.n_heads, n_kv_heads=cfg.n_heads, vocab_size=tok.vocab_size,
                 seq_len=cfg.context)
    model = DecoderLM(c, tied=True)
    for n, p in model.named_parameters():
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.02 if "embeddings" in n else 1 / math.sqrt(p.shape[1]))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    t0 = time.monotonic()
    for step in range(cfg.steps):
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        if step < cfg.warmup_steps:
            lr *= (step + 1) / cfg.warmup_steps
        for group in opt.param_groups:
            group["lr"] = lr
        start = torch.randint(0, len(train) - cfg.context - 1, (cfg.batch_size,), generator=g)
        x = torch.stack([train[s:s + cfg.context] for s in start.tolist()])
        y = torch.stack([train[s + 1:s + cfg.context + 1] for s in start.tolist()])
        loss = _loss(model, x, y, cfg.exit_loss_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            log.info("step %d loss %.3f (%.0f s)", step, loss.item(), time.monotonic() - t0)
    model.eval()
    per_block = held_out_loss_per_block(model, held, cfg.context)
    info = {"train_s": time.monotonic() - t0, "held_out_loss": per_block[-1],
            "recipe": asdict(cfg),
            **{f"held_out_loss_block{k}": v for k, v in enumerate(per_block, 1)}}
    return model, tok, info


def _loss(model: DecoderLM, x: torch.Tensor, y: torch.Tensor, exit_weight: float) -> torch.Tensor:
    """Next-token cross-entropy of full depth, plus `exit_weight` × the mean over earlier
    blocks of the shared head's cross-entropy (the early-exit loss)."""
    if exit_weight == 0:
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    hs = model.hidden_states(x)
    ce = [F.cross_entropy(model.head(h).flatten(0, 1), y.flatten()) for h in hs]
    return ce[-1] + exit_weight * torch.stack(ce[:-1]).mean() if len(ce) > 1 else ce[-1]


@torch.no_grad()
def held_out_loss_per_block(model: DecoderLM, held: torch.Tensor, context: int,
                            windows: int = 64) -> list[float]:
    """Cross-entropy of the shared final head read after each block, on evenly spaced
    held-out windows (the last entry is the model's own held-out loss)."""
    starts = torch.linspace(0, len(held) - context - 1, windows).long().tolist()
    x = torch.stack([held[s:s + context] for s in starts])
    y = torch.stack([held[s + 1:s + context + 1] for s in starts])
    return [float(F.cross_entropy(model.head(h).flatten(0, 1), y.flatten()))
            for h in model.hidden_states(x)]


def save_char_gpt(model: DecoderLM, tok: CharTokenizer, path: str | Path, info: dict) -> Path:
    """Write the weights atomically with a `.sha256` beside them."""
    p = Path(path)
    obj = {"format": "edge-ee-char-gpt", "config": model.config.to_dict(), "chars": tok.chars,
           "info": {k: v for k, v in info.items() if isinstance(v, int | float | str)},
           "state_dict": {k: v for k, v in model.state_dict().items() if k != "output.weight"}}
    save_with_sidecar(obj, p)
    return p


def load_char_gpt(path: str | Path | None = None) -> tuple[DecoderLM, CharTokenizer]:
    """The shipped (or given) char GPT, its checksum verified against the `.sha256` beside it."""
    p = Path(path) if path else ASSET
    if not p.is_file():
        raise ModelError(f"char GPT weights {p} not found; retrain with `edge-ee lm train-char`")
    verify_sidecar(p)  # before torch.load: a missing or wrong .sha256 is an error
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several kinds for a file that is not a checkpoint
        raise ModelError(f"cannot read {p} ({err}); pass a file `edge-ee lm train-char` wrote") from err
    if not isinstance(obj, dict) or obj.get("format") != "edge-ee-char-gpt":
        raise ModelError(f"{p} is not an edge-ee char GPT checkpoint; retrain with "
                         "`edge-ee lm train-char`")
    model = DecoderLM(LMConfig(**obj["config"]), tied=True)
    state = dict(obj["state_dict"])
    state["output.weight"] = state["tok_embeddings.weight"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelError(f"{p} does not fit its own config ({err}); retrain it") from err
    return model.eval(), CharTokenizer(obj["chars"])
