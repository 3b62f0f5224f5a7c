"""A Llama-style decoder-only LM (RMSNorm, RoPE, grouped KV heads, SwiGLU) with taps after
every block, so an exit LM head can read R_{i,K} (the hidden state after block K).

The same module holds the pretrained stories260K (read from its llama2.c file by
`edge_ee.lm.llama2c`) and the toolkit's own character-level GPT (`edge_ee.lm.char_gpt`).
Weights act as `x @ W.T` (nn.Linear), which equals llama2.c's `W @ x`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edge_ee.errors import ModelError


@dataclass(frozen=True)
class LMConfig:
    """Architecture (the llama2.c header plus RMSNorm eps and RoPE theta)."""

    dim: int = 64
    hidden_dim: int = 172
    n_layers: int = 5
    n_heads: int = 8
    n_kv_heads: int = 4
    vocab_size: int = 512
    seq_len: int = 512
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if min(self.dim, self.hidden_dim, self.n_layers, self.n_heads, self.n_kv_heads,
               self.vocab_size, self.seq_len) <= 0:
            raise ModelError(f"LM config has a non-positive size: {self}; check the header")
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ModelError(f"dim {self.dim} / n_heads {self.n_heads} / n_kv_heads "
                             f"{self.n_kv_heads} do not divide; check the header")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x / sqrt(·) (not x * rsqrt(·)): the pattern onnxruntime fuses into one
        # SimplifiedLayerNormalization node (7 exported nodes → 1 per norm)
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _pair_rotation(hd: int) -> torch.Tensor:
    """R (hd, hd) with (x @ R)[2i] = −x[2i+1] and (x @ R)[2i+1] = x[2i]."""
    r = torch.zeros(hd, hd)
    i = torch.arange(0, hd, 2)
    r[i + 1, i] = -1.0
    r[i, i + 1] = 1.0
    return r


def rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate consecutive (even, odd) pairs of x (B, H, T, hd) by pos (T,) · theta^(-2i/hd):
    x·cos + (x @ R)·sin with the angles repeated per pair — one MatMul, two Mul and an
    Add once exported, instead of strided slices, a stack and a reshape."""
    hd = x.shape[-1]
    freq = theta ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    ang = (pos.to(torch.float32)[:, None] * freq[None, :]).repeat_interleave(2, -1)  # (T, hd)
    return x * torch.cos(ang) + (x @ _pair_rotation(hd)) * torch.sin(ang)


class Block(nn.Module):
    """x += attn(rms(x)); x += ffn(rms(x)). `kv` exposes the K,V a state computes."""

    def __init__(self, c: LMConfig) -> None:
        super().__init__()
        self.c = c
        self.attention_norm = RMSNorm(c.dim, c.norm_eps)
        self.wq = nn.Linear(c.dim, c.dim, bias=False)
        self.wk = nn.Linear(c.dim, c.kv_dim, bias=False)
        self.wv = nn.Linear(c.dim, c.kv_dim, bias=False)
        self.wo = nn.Linear(c.dim, c.dim, bias=False)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.w1 = nn.Linear(c.dim, c.hidden_dim, bias=False)
        self.w2 = nn.Linear(c.hidden_dim, c.dim, bias=False)
        self.w3 = nn.Linear(c.dim, c.hidden_dim, bias=False)

    def kv(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K (roped) and V of states x (B, T, D) at positions pos: (B, kvH, T, hd) each."""
        c = self.c
        b, t, _ = x.shape
        h = self.attention_norm(x)
        k = self.wk(h).view(b, t, c.n_kv_heads, c.head_dim).transpose(1, 2)
        v = self.wv(h).view(b, t, c.n_kv_heads, c.head_dim).transpose(1, 2)
        return rope(k, pos, c.rope_theta), v

    def query(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        c = self.c
        b, t, _ = x.shape
        q = self.wq(self.attention_norm(x)).view(b, t, c.n_heads, c.head_dim).transpose(1, 2)
        return rope(q, pos, c.rope_theta)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """q (B,H,Tq,hd) over k, v (B,kvH,Tk,hd); mask (Tq,Tk) bool True = may attend."""
        c = self.c
        rep = c.n_heads // c.n_kv_heads
        b, _, tq, hd = q.shape
        # the `rep` query heads that share a KV head become rows of one group (no copies
        # of K and V: a reshape instead of repeat_interleave's Expand + Reshape per tensor)
        q = q.reshape(b, c.n_kv_heads, rep * tq, hd)
        att = (q @ k.transpose(-1, -2)) * (c.head_dim ** -0.5)  # (B, kvH, rep·Tq, Tk)
        if mask is not None:
            att = att.masked_fill(~(mask.repeat(rep, 1) if rep > 1 else mask), float("-inf"))
        out = (torch.softmax(att, dim=-1) @ v).reshape(b, c.n_heads, tq, hd)
        return self.wo(out.transpose(1, 2).reshape(b, tq, c.dim))

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ffn_norm(x)
        return self.w2(F.silu(self.w1(h)) * self.w3(h))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        k, v = self.kv(x, pos)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        x = x + self.attend(self.query(x, pos), k, v, mask)
        return x + self.ffn(x)


class DecoderLM(nn.Module):
    """Token embedding, n_layers blocks, final RMSNorm, LM head (tied to the embedding
    when `tied`). `hidden_states` returns R_{·,K} after every block K = 1..n_layers."""

    def __init__(self, c: LMConfig, tied: bool = True) -> None:
        super().__init__()
        self.config = c
        self.tied = tied
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.output = nn.Linear(c.dim, c.vocab_size, bias=False)
        if tied:
            self.output.weight = self.tok_embeddings.weight

    def check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.shape[-1] > self.config.seq_len:
            raise ModelError(f"{tokens.shape[-1]} tokens exceed the context of "
                             f"{self.config.seq_len}; shorten the prompt or the generation")

    def hidden_states(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """[R after block 1, …, R after block n_layers], each (B, T, D)."""
        self.check_tokens(tokens)
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tok_embeddings(tokens)
        out = []
        for layer in self.layers:
            x = layer(x, pos)
            out.append(x)
        return out

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.norm(x))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden_states(tokens)[-1])

    @torch.no_grad()
    def sample(self, batch: int, length: int, temperature: float = 1.0, seed: int = 0,
               start: int = 1, greedy_from: int | None = None) -> torch.Tensor:
        """`batch` sequences of `length` tokens sampled from the model itself (data-free
        statistics), starting from token `start` (BOS); incremental with a KV cache. From
        position `greedy_from` on, the argmax is taken (greedy continuations of sampled
        prefixes: what greedy decoding on the device meets)."""
        if length > self.config.seq_len:
            raise ModelError(f"length {length} exceeds the context of {self.config.seq_len}")
        g = torch.Generator().manual_seed(seed)
        toks = torch.full((batch, 1), start, dtype=torch.long)
        caches: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.layers)
        for t in range(length - 1):
            pos = torch.tensor([t])
            x = self.tok_embeddings(toks[:, -1:])
            for i, layer in enumerate(self.layers):
                k, v = layer.kv(x, pos)
                if caches[i] is not None:
                    k = torch.cat((caches[i][0], k), 2)
                    v = torch.cat((caches[i][1], v), 2)
                caches[i] = (k, v)
                x = x + layer.attend(layer.query(x, pos), k, v, None)
                x = x + layer.ffn(x)
            z = self.head(x[:, -1])
            if greedy_from is not None and t + 1 >= greedy_from:
                nxt = z.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(torch.softmax(z / max(temperature, 1e-6), -1), 1,
                                        generator=g)
            toks = torch.cat((toks, nxt), 1)
        return toks

    @torch.no_grad()
    def generate(self, prompt: list[int], max_new_tokens: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None, stop: int | None = None) -> list[int]:
        """Greedy (temperature 0) or sampled continuation, full recompute per token."""
        toks = list(prompt)
        for _ in range(max_new_tokens):
            if len(toks) >= self.config.seq_len:
                break
            logits = self(torch.tensor([toks]))[0, -1]
            if temperature <= 0:
                nxt = int(logits.argmax())
            else:
                p = torch.softmax(logits / temperature, -1)
                nxt = int(torch.multinomial(p, 1, generator=generator))
            if stop is not None and nxt == stop:
                break
            toks.append(nxt)
        return toks
