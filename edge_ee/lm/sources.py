"""The two language models the toolkit knows, behind one small record: the pretrained
stories260K (llama2.c files) and the shipped character-level GPT (tinyshakespeare).

`LMSource` carries the model, its tokenizer's encode/decode and vocabulary pieces, the
start token, and the real held-out text every evaluation uses (the TinyStories sample,
one story a line; the last 10 % of tinyshakespeare in windows of the model's context).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from edge_ee.errors import DataError
from edge_ee.lm.model import DecoderLM

CHAR_GPT = "char-gpt"
STORIES = "stories260K"


def data_dir() -> Path:
    env = os.environ.get("EDGE_EE_DATA")
    return Path(env) if env else Path.cwd().parent / "shared" / "data"


@dataclass
class LMSource:
    name: str
    model: DecoderLM
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    pieces: list[str]
    start: int
    held_out: list[torch.Tensor]  # real text, each (1, T) token ids


def load_source(model: str = STORIES, tokenizer: str | None = None, text: str | None = None,
                max_eval_tokens: int = 20000) -> LMSource:
    """`model`: 'stories260K' (../shared/data), a llama2.c .bin path, 'char-gpt' (shipped) or
    a char GPT .pt path; `tokenizer`: the llama2.c tokenizer (default tok512.bin beside
    the model); `text`: held-out text file (default: the model's own)."""
    if model == CHAR_GPT or model.endswith(".pt"):
        from edge_ee.lm.char_gpt import load_char_gpt, read_text, split_ids
        m, tok = load_char_gpt(None if model == CHAR_GPT else model)
        raw = read_text(text or data_dir() / "tinyshakespeare.txt")
        _, held = split_ids(torch.tensor(tok.encode(raw)))
        held = held[:max_eval_tokens]
        w = m.config.seq_len
        seqs = [held[i:i + w][None] for i in range(0, len(held) - w + 1, w)]
        return LMSource(CHAR_GPT if model == CHAR_GPT else Path(model).stem, m, tok.encode,
                        tok.decode, tok.piece_names(),
                        int(held[0]), seqs)
    from edge_ee.lm.llama2c import read_llama2c, read_tokenizer
    path = data_dir() / "stories260K" / "stories260K.bin" if model == STORIES else Path(model)
    m = read_llama2c(path)
    tk = read_tokenizer(tokenizer or path.with_name("tok512.bin"), m.config.vocab_size)
    tpath = Path(text) if text else path.with_name("tinystories-sample.txt")
    if not tpath.is_file():
        raise DataError(f"held-out text {tpath} not found; pass --text FILE (one story a line)")
    seqs, n = [], 0
    for line in tpath.read_text(encoding="utf-8").splitlines():
        if line.strip() and n < max_eval_tokens:
            ids = tk.encode(line.strip())[:m.config.seq_len]
            seqs.append(torch.tensor([ids]))
            n += len(ids)
    return LMSource(STORIES if model == STORIES else path.stem, m,
                    lambda s: tk.encode(s), tk.decode, tk.piece_names(), tk.bos, seqs)
