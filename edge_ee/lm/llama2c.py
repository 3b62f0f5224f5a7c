"""Readers for llama2.c files: the v0 checkpoint (stories260K) and the tokenizer (tok512.bin).

v0 checkpoint: 7 int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
vocab_size, seq_len; a negative vocab_size means an unshared classifier), then float32
arrays (embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, two RoPE
tables, [classifier]). The file size must match the header exactly.

Tokenizer: int32 max_token_length, then per token float32 score, int32 length, bytes.
Encoding follows llama2.c: a dummy-prefix space, characters to pieces (byte fallback
`<0xNN>` = id byte+3), then repeatedly merge the adjacent pair whose merged piece has the
highest score.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge_ee.errors import DataError, ModelError
from edge_ee.lm.model import DecoderLM, LMConfig

HEADER = struct.Struct("<7i")
BOS, EOS = 1, 2


def read_llama2c(path: str | Path) -> DecoderLM:
    """The llama2.c v0 checkpoint at `path` as a DecoderLM in eval mode."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint {p} not found; pass a llama2.c v0 .bin file")
    raw = p.read_bytes()
    if len(raw) < HEADER.size:
        raise ModelError(f"{p} has {len(raw)} bytes, shorter than a llama2.c header; "
                         "pass a llama2.c v0 checkpoint (export.py --version 0)")
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = HEADER.unpack_from(raw)
    shared = vocab > 0
    vocab = abs(vocab)
    try:
        c = LMConfig(dim=dim, hidden_dim=hidden, n_layers=layers, n_heads=heads,
                     n_kv_heads=kv_heads, vocab_size=vocab, seq_len=seq_len)
    except ModelError as err:
        raise ModelError(f"{p}: header {HEADER.unpack_from(raw)} is not a llama2.c v0 "
                         f"header ({err}); pass a v0 checkpoint (a v1/v2 file starts with "
                         "the magic 'ak42')") from err
    hd, kv = c.head_dim, c.kv_dim
    shapes = [("tok_embeddings", (vocab, dim)), ("rms_att", (layers, dim)),
              ("wq", (layers, dim, dim)), ("wk", (layers, kv, dim)), ("wv", (layers, kv, dim)),
              ("wo", (layers, dim, dim)), ("rms_ffn", (layers, dim)),
              ("w1", (layers, hidden, dim)), ("w2", (layers, dim, hidden)),
              ("w3", (layers, hidden, dim)), ("rms_final", (dim,)),
              ("freq_cis_real", (seq_len * hd // 2,)), ("freq_cis_imag", (seq_len * hd // 2,))]
    if not shared:
        shapes.append(("output", (vocab, dim)))
    want = HEADER.size + 4 * sum(int(np.prod(s)) for _, s in shapes)
    if len(raw) != want:
        raise ModelError(f"{p} has {len(raw)} bytes but its header {HEADER.unpack_from(raw)} "
                         f"implies {want}; the file is truncated or not a llama2.c v0 "
                         "checkpoint — re-download it or re-export with --version 0")
    arrays, off = {}, HEADER.size
    for name, shape in shapes:
        n = int(np.prod(shape))
        arrays[name] = torch.from_numpy(
            np.frombuffer(raw, np.float32, n, off).reshape(shape).copy())
        off += 4 * n
    model = DecoderLM(c, tied=shared)
    with torch.no_grad():
        model.tok_embeddings.weight.copy_(arrays["tok_embeddings"])
        for i, blk in enumerate(model.layers):
            blk.attention_norm.weight.copy_(arrays["rms_att"][i])
            blk.ffn_norm.weight.copy_(arrays["rms_ffn"][i])
            for w in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
                getattr(blk, w).weight.copy_(arrays[w][i])
        model.norm.weight.copy_(arrays["rms_final"])
        if not shared:
            model.output.weight.copy_(arrays["output"])
    return model.eval()


@dataclass(frozen=True)
class Tokenizer:
    """A llama2.c / sentencepiece-style vocabulary: pieces and merge scores."""

    pieces: tuple[bytes, ...]
    scores: tuple[float, ...]
    bos: int = BOS
    eos: int = EOS

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def check_model(self, vocab_size: int, what: str = "the model") -> None:
        if vocab_size != self.vocab_size:
            raise ModelError(f"the tokenizer has {self.vocab_size} pieces but {what} has a "
                             f"vocabulary of {vocab_size}; pass the tokenizer the model was "
                             "trained with")

    def piece_names(self) -> list[str]:
        return [p.decode("utf-8", "replace") for p in self.pieces]

    def _lookup(self) -> dict[bytes, int]:
        return {p: i for i, p in enumerate(self.pieces)}

    def encode(self, text: str, bos: bool = True) -> list[int]:
        ids_of = self._lookup()
        ids: list[int] = []
        for ch in (" " + text if text else ""):
            b = ch.encode("utf-8")
            if b in ids_of:
                ids.append(ids_of[b])
            else:
                ids.extend(x + 3 for x in b)  # byte fallback <0xNN>
        while True:
            best, best_i, best_id = -1e10, -1, -1
            for i in range(len(ids) - 1):
                j = ids_of.get(self.pieces[ids[i]] + self.pieces[ids[i + 1]])
                if j is not None and self.scores[j] > best:
                    best, best_i, best_id = self.scores[j], i, j
            if best_i < 0:
                break
            ids[best_i:best_i + 2] = [best_id]
        return ([self.bos] if bos else []) + ids

    def decode_piece(self, prev: int, tok: int) -> bytes:
        piece = self.pieces[tok]
        if prev == self.bos and piece.startswith(b" "):
            piece = piece[1:]
        if piece.startswith(b"<0x") and piece.endswith(b">") and len(piece) == 6:
            piece = bytes([int(piece[3:5], 16)])
        return piece

    def decode(self, ids: list[int]) -> str:
        out, prev = b"", self.bos
        for t in ids:
            if t in (self.bos, self.eos):
                prev = t
                continue
            out += self.decode_piece(prev, t)
            prev = t
        return out.decode("utf-8", "replace")


def read_tokenizer(path: str | Path, vocab_size: int | None = None) -> Tokenizer:
    """tok512.bin-style file; `vocab_size` (the model's) reads exactly that many pieces and
    checks the file ends there."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"tokenizer {p} not found; pass a llama2.c tokenizer .bin (tok512.bin)")
    raw = p.read_bytes()
    pieces, scores, off = [], [], 4
    try:
        while off < len(raw):
            score, n = struct.unpack_from("<fi", raw, off)
            if n < 0 or off + 8 + n > len(raw):
                raise struct.error("piece length out of range")
            pieces.append(raw[off + 8:off + 8 + n])
            scores.append(score)
            off += 8 + n
    except struct.error as err:
        raise DataError(f"{p} is not a llama2.c tokenizer ({err} at byte {off}); pass the "
                        "tokenizer .bin that llama2.c's tokenizer.py wrote") from err
    if not pieces:
        raise DataError(f"{p} holds no pieces; pass a llama2.c tokenizer .bin")
    tok = Tokenizer(tuple(pieces), tuple(scores))
    if vocab_size is not None:
        tok.check_model(vocab_size)
    return tok
