"""Early-exit language models on the real stories260K: the llama2.c readers (golden greedy
text), bad input, class-aware exit-head init at zero training, the per-token early-exit
decoding bundle run by `edge-ee-run` on onnxruntime (full depth reproduces torch's greedy
decoding token for token)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from device_runners.errors import InputSpecError
from edge_ee.errors import ConfigError, ModelError

pytestmark = pytest.mark.shared_data
GOLDEN = ("Once upon a time, there was a little girl named Lily. She loved to play outside in "
          "the park. One day, she saw a big, red ball. She wanted to play with it, but it was "
          "too high.")


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})


@pytest.fixture(scope="module")
def stories(data_dir: Path):
    from edge_ee.lm.llama2c import read_llama2c, read_tokenizer
    d = data_dir / "stories260K"
    m = read_llama2c(d / "stories260K.bin")
    return m, read_tokenizer(d / "tok512.bin", m.config.vocab_size)


def test_golden_greedy_text_and_tokenizer_round_trip(stories, data_dir: Path) -> None:
    m, tok = stories
    assert m.config.n_layers == 5 and m.config.vocab_size == 512
    assert tok.decode(m.generate([tok.bos], 70)).startswith(GOLDEN)
    line = (data_dir / "stories260K" / "tinystories-sample.txt").read_text().splitlines()[0]
    ids = tok.encode(line)
    assert ids[0] == tok.bos and len(ids) < len(line) / 1.5 and tok.decode(ids) == line


def test_bad_checkpoints_tokenizers_exits_and_prompts(stories, data_dir: Path,
                                                      tmp_path: Path) -> None:
    from edge_ee.lm.exit_init import check_exits
    from edge_ee.lm.llama2c import read_llama2c, read_tokenizer
    m, _ = stories
    raw = (data_dir / "stories260K" / "stories260K.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(raw[:-100])
    with pytest.raises(ModelError, match=r"truncated or not a llama2\.c v0"):
        read_llama2c(tmp_path / "short.bin")
    (tmp_path / "v1.bin").write_bytes(b"ak42" + struct.pack("<i", 1) + raw[8:])
    with pytest.raises(ModelError, match=r"llama2\.c"):
        read_llama2c(tmp_path / "v1.bin")
    tok = (data_dir / "stories260K" / "tok512.bin").read_bytes()
    off, pieces = 4, 0
    while pieces < 100:
        off += 8 + struct.unpack_from("<i", tok, off + 4)[0]
        pieces += 1
    (tmp_path / "tok100.bin").write_bytes(tok[:off])
    with pytest.raises(ModelError, match="100 pieces but the model has a vocabulary of 512"):
        read_tokenizer(tmp_path / "tok100.bin", m.config.vocab_size)
    with pytest.raises(ModelError, match="has 5 blocks"):
        check_exits(m, (5,))
    with pytest.raises(ModelError, match="exceed the context of 512"):
        m.hidden_states(torch.ones(1, 513, dtype=torch.long))


def test_class_aware_init_beats_copy_and_random_at_zero_training(stories, data_dir: Path) -> None:
    from edge_ee.lm.exit_init import (
        GROUPINGS,
        InitContext,
        head_accuracy,
        held_out_features,
        init_weights,
        token_stats,
    )
    from edge_ee.lm.train_exits import ExitTrainConfig, initial_heads
    m, tok = stories
    lines = (data_dir / "stories260K" / "tinystories-sample.txt").read_text().splitlines()
    held = [torch.tensor([tok.encode(s)[:256]]) for s in lines[:6] if s.strip()]
    seqs = m.sample(40, 128, seed=0)
    stats = token_stats(m, seqs.split(20), (2,))
    st = stats[(2, "target")]
    # N0/2 = pooled within-class variance per dimension, checked against a direct computation
    from edge_ee.lm.exit_init import exit_features
    x = exit_features(m, seqs, (2,))[2][:, :-1].reshape(-1, 64).double()
    y = seqs[:, 1:].reshape(-1)
    resid = x - st.means()[y]
    seen = int((st.counts > 0).sum())
    assert st.pooled_within_variance() == pytest.approx(
        float((resid ** 2).sum()) / ((len(y) - seen) * 64), rel=1e-9)
    ctx = InitContext(m, {g: stats[(2, g)] for g in GROUPINGS})
    feats, targets = held_out_features(m, held, (2,))
    acc = {n: head_accuracy(*init_weights(n, ctx), feats[2], targets)
           for n in ("random", "copy", "class-aware-target", "class-aware-input")}
    assert acc["class-aware-target"][0] >= 3 * acc["copy"][0]  # measured 0.16 vs 0.04
    assert acc["class-aware-target"][0] > 0.10 > acc["class-aware-input"][0]
    assert acc["random"][0] < 0.02
    # the investigation: W·R + η is far too sharp; a fitted temperature keeps the argmax
    h = initial_heads(m, (2,), ExitTrainConfig(init="class-aware-target", logit_scale="fitted"),
                      stats, seqs[:8])
    fitted = head_accuracy(h.heads[0].weight.detach(), h.heads[0].bias.detach(), feats[2], targets)
    assert fitted[0] == pytest.approx(acc["class-aware-target"][0])
    assert fitted[1] < acc["class-aware-target"][1] / 3
    # the mix with α by accuracy on the statistics sequences starts no worse than either
    # part there (α = 0 and 1 are the parts themselves)
    sx = exit_features(m, seqs[:8], (2,))[2][:, :-1].reshape(-1, 64)
    sy = seqs[:8, 1:].reshape(-1)

    def stats_acc(init: str, **kw) -> float:
        hh = initial_heads(m, (2,), ExitTrainConfig(init=init, logit_scale="fitted", **kw),
                           stats, seqs[:8])
        z = sx @ hh.heads[0].weight.detach().T + hh.heads[0].bias.detach()
        return float((z.argmax(-1) == sy).double().mean())

    mix = stats_acc("mix", fit_alpha=True, alpha_by="accuracy")
    assert mix >= max(stats_acc("class-aware-target"), stats_acc("copy")) - 1e-12
    with pytest.raises(ConfigError, match="alpha_by"):
        ExitTrainConfig(alpha_by="vibes")


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edge_ee.lm.build import LMBuildConfig, build_lm_bundle
    out = tmp_path_factory.mktemp("lm") / "ee"
    build_lm_bundle(LMBuildConfig(out=str(out), exits=(2,), stats_sequences=16,
                                  sequence_length=64, train_steps=10, min_agreement=0.9,
                                  new_tokens=24))
    return out


def test_bundle_decodes_on_onnxruntime_like_torch(lm_bundle: Path, stories, tmp_path: Path) -> None:
    from device_runners.backends import open_backend
    from device_runners.decode import decode
    from device_runners.executor import ACTIVE_SETS, execute
    from device_runners.manifest import load_bundle
    m, tok = stories
    b = load_bundle(lm_bundle)
    man = b.manifest
    assert man["model"]["task"] == "language-model" and man["model"]["granularity"] == "position"
    assert ACTIVE_SETS["position"].sequential  # a granularity of the one executor loop
    assert len(man["classes"]) == 512 and [s["blocks"] for s in man["segments"]] == [[0, 2], [2, 5]]
    assert man["self_check"]["passed"] and man["self_check"]["compared_positions"] > 0
    # calm thresholds were checked by decoding sampled prompts with the exported graphs
    check = man["model"]["exit_heads"]["decoded_check"]
    assert check and (check[-1]["decoded_agreement"] >= 0.9 or check[-1]["exit_rate"] == 0)
    assert check[-1]["thresholds"][0] == pytest.approx(man["segments"][0]["exit"]["threshold"])
    be = open_backend(b)
    greedy = m.generate([tok.bos], 40)[1:]
    full = decode(b, be, [tok.bos], 40, no_exit=True)
    assert full.prediction.tolist() == greedy  # KV-cache graphs = torch greedy
    assert set(full.exit.tolist()) == {1}
    ee = decode(b, be, [tok.bos], 40, policy="calm")
    assert set(ee.exit.tolist()) <= {0, 1} and len(ee.prediction) == 40 and (ee.exit == 0).any()
    # verify: exits draft, the last segment checks them; the output is full depth exactly
    ver = decode(b, be, [tok.bos], 40, policy="verify")
    assert ver.prediction.tolist() == greedy and (ver.exit == 0).any()
    # one input row through `execute` itself: the prompt, then −1 slots to generate
    row = np.asarray([[tok.bos] + [-1] * 40])
    assert execute(b, be, row, no_exit=True).prediction.tolist() == greedy
    with pytest.raises(InputSpecError, match="exceed the context of 512"):
        decode(b, be, np.ones(500, np.int64), 20)
    common = ("--quiet", "--idle-s", "0", "--warmup-runs", "1", "--profile", "none",
              "--power-source", "null")
    runs = {"full": ["--no-exit"], "calm": ["--decoding", "calm"],
            "verify": ["--decoding", "verify"]}
    for name, extra in runs.items():
        r = _cli("device_runners.cli", str(lm_bundle), "--out", str(tmp_path / f"{name}.json"),
                 *common, *extra)
        assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "calm.json").read_text())
    assert res["task"] == "language-model" and res["self_check"]["passed"]
    s = res["samples"]
    assert len(s["prediction"]) == 2 * 24 and sorted(set(s["position"])) == list(range(24))
    from device_runners.results import load_results
    from edge_ee.report import summarize, write_report
    sums = [summarize(load_results(tmp_path / f"{n}.json"), b) for n in runs]
    assert sums[0]["exit_fractions"] == [0.0, 1.0] and sums[0]["tokens_per_s"] > 0
    assert sum(sums[1]["exit_fractions"]) == pytest.approx(1.0)
    assert sums[2]["sequences"] == sums[0]["sequences"]  # verify = full depth, token for token
    assert sums[2]["exit_fractions"][0] > 0
    md = write_report(sums, list(runs), tmp_path / "rep").read_text()
    assert "Token-by-token decoding" in md and "| full | none (--no-exit) | 48 |" in md
    assert "| verify | verify | 48 |" in md


def test_cli_rejects_an_exit_after_a_missing_block(tmp_path: Path) -> None:
    r = _cli("edge_ee.cli", "lm", "build", "--exits", "7", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "has 5 blocks" in r.stderr and "Traceback" not in r.stderr


def test_verify_policy_replay_counts_drafts_verifications_and_waste() -> None:
    from edge_ee.lm.build import verify_time_per_token
    conf = np.array([0.9, 0.9, 0.1, 0.9, 0.1])
    ok = np.ones(5, bool)
    # draft, draft, verify (draft + rest), draft, verify: 1 + 1 + 3 + 1 + 3
    assert verify_time_per_token(conf, ok, 0.5, 1.0, 2.0) == pytest.approx(9 / 5)
    ok[0] = False  # the first draft is wrong: found at position 2, decoding resumes at 1
    assert verify_time_per_token(conf, ok, 0.5, 1.0, 2.0) == pytest.approx(13 / 5)
    assert verify_time_per_token(conf, ok, 1.0, 1.0, 2.0) == pytest.approx(3.0)  # no drafts
