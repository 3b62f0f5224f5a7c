"""Per-segment decoding graphs of an early-exit LM, with the KV cache as explicit state.

Segment s runs blocks [a, b) for P consecutive positions pos .. pos+P−1 against each
layer's past K,V (T rows, layout (T, kv_heads, head_dim)) and returns only the P new K,V
rows per layer; the runner keeps the cache. The first `copied` rows of a later segment's
input are *copied* states of tokens that exited before this segment: they are not
updated by the blocks (x stays the exited hidden state at every layer), so each skipped
layer computes its K,V from the copied state (CALM / LayerSkip). They ride along with the
next token that reaches the segment, so filling them costs no extra runtime call.

Outputs: `h_out` (1,P,D) the rows' states to pass on (copied rows unchanged; not in the last
segment), then the exit's `token` (1,) int64, `confidence` (1,) float32 and `exit` (1,)
bool; the exit head is `edge_ee.exits.heads.ExitHead` (identity transform → LinearScorer
→ max softmax → threshold), reading rms_final(h) of the last row. The last segment ends
with the model's own head (`FinalHead`) on every row — `token`, `confidence`, `exit` (P,)
— so one call verifies the drafted tokens riding along (`device_runners.decode`).
"""

from __future__ import annotations

import torch
from torch import nn

from edge_ee.exits.heads import ExitHead, FeatureTransform, FinalHead, LinearScorer
from edge_ee.lm.model import DecoderLM


def linear_exit_head(w: torch.Tensor, b: torch.Tensor, threshold: float) -> ExitHead:
    return ExitHead(FeatureTransform(None), LinearScorer(w.detach(), b.detach()),
                    "max_softmax", threshold)


class LMSegment(nn.Module):
    """Blocks [first, last) of `model` plus an exit head (or the final head)."""

    def __init__(self, model: DecoderLM, first: int, last: int, head: ExitHead | None) -> None:
        super().__init__()
        self.first, self.last = first, last
        self.is_first = first == 0
        self.is_last = head is None
        self.c = model.config
        self.embed = model.tok_embeddings if self.is_first else None
        self.blocks = nn.ModuleList(model.layers[first:last])
        self.norm = model.norm
        self.exit_head = head
        self.final = FinalHead(model.output) if head is None else None

    def input_names(self) -> list[str]:
        lead = ["tokens", "pos"] if self.is_first else ["h", "pos", "copied"]
        kv = [f"past_{kv}{i}" for i in range(self.first, self.last) for kv in ("k", "v")]
        return lead + kv

    def output_names(self) -> list[str]:
        kv = [f"new_{kv}{i}" for i in range(self.first, self.last) for kv in ("k", "v")]
        # `h_out`, not `h`: a middle segment takes `h` and an ONNX graph cannot have an
        # input and an output of one name (so bundles with two or more exits export)
        return ([] if self.is_last else ["h_out"]) + ["token", "confidence", "exit"] + kv

    def forward(self, x: torch.Tensor, pos: torch.Tensor, *rest: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        if self.is_first:
            x = self.embed(x)  # (1, P) tokens → (1, P, D)
            copied, past = None, rest
        else:
            copied, past = rest[0], rest[1:]
        p = x.shape[1]
        rows = torch.arange(p)
        positions = pos[0] + rows
        keep = None if copied is None else (rows < copied[0]).view(1, p, 1)
        new_kv: list[torch.Tensor] = []
        t = past[0].shape[0]  # every layer's past has the same length: one mask
        mask = torch.cat((torch.ones(p, t, dtype=torch.bool),
                          torch.ones(p, p, dtype=torch.bool).tril()), 1)
        for j, blk in enumerate(self.blocks):
            pk, pv = past[2 * j], past[2 * j + 1]  # (T, kvH, hd)
            k, v = blk.kv(x, positions)  # (1, kvH, P, hd)
            new_kv += [k[0].transpose(0, 1), v[0].transpose(0, 1)]
            kk = torch.cat((pk.transpose(0, 1).unsqueeze(0), k), 2)
            vv = torch.cat((pv.transpose(0, 1).unsqueeze(0), v), 2)
            y = x + blk.attend(blk.query(x, positions), kk, vv, mask)
            y = y + blk.ffn(y)
            x = y if keep is None else torch.where(keep, x, y)
        last = x[:, -1]  # (1, D)
        if self.is_last:  # every row's next token: verifies the drafts riding along
            token, conf, _ = self.final(self.norm(x[0]))
            return (token, conf, torch.ones_like(token, dtype=torch.bool), *new_kv)
        token, conf, flag = self.exit_head(self.norm(last))
        return (x, token, conf, flag, *new_kv)


def segment_bounds(n_layers: int, exits: tuple[int, ...]) -> list[tuple[int, int]]:
    cuts = [0, *exits, n_layers]
    return [(cuts[i], cuts[i + 1]) for i in range(len(cuts) - 1)]


def build_segments(model: DecoderLM, exits: tuple[int, ...],
                   heads: list[tuple[torch.Tensor, torch.Tensor]], thresholds: list[float]
                   ) -> list[LMSegment]:
    """One LMSegment per exit (blocks up to it) plus the last (to the final head)."""
    segs = []
    for i, (a, b) in enumerate(segment_bounds(model.config.n_layers, exits)):
        head = None if i == len(exits) else linear_exit_head(*heads[i], thresholds[i])
        segs.append(LMSegment(model, a, b, head).eval())
    return segs


def example_feeds(seg: LMSegment, past: int = 3, p: int = 2) -> tuple[torch.Tensor, ...]:
    c = seg.c
    lead: tuple[torch.Tensor, ...]
    if seg.is_first:
        lead = (torch.ones(1, p, dtype=torch.long), torch.tensor([past]))
    else:
        lead = (torch.randn(1, p, c.dim), torch.tensor([past]), torch.tensor([1]))
    kv = tuple(torch.randn(past, c.n_kv_heads, c.head_dim)
               for _ in range(2 * (seg.last - seg.first)))
    return lead + kv
