"""Faster LM decoding graphs and the cost model behind the exit choice: the char GPT
presets and their typed errors, the exported graphs onnxruntime fuses (RMSNorm → one
SimplifiedLayerNormalization, no K/V copies for grouped heads) giving the same tokens as
torch, call costs measured on a real onnxruntime session, and the replays that turn
them into thresholds and an exit."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edge_ee.errors import ConfigError
from tests.helpers_data import SHARED_DATA, needs


def test_char_presets_and_bad_recipes() -> None:
    from edge_ee.lm.char_gpt import CharTrainConfig, char_preset
    small, large = char_preset("small"), char_preset("large")
    assert small == CharTrainConfig()  # the shipped model's recipe is unchanged
    assert (large.dim, large.n_layers, large.hidden_dim) == (256, 6, 688)
    assert large.exit_loss_weight == 0.0 and char_preset("deep").exit_loss_weight == 1.0
    assert char_preset("large", steps=100, lr=None).steps == 100
    with pytest.raises(ConfigError, match="choose from"):
        char_preset("huge")
    with pytest.raises(ConfigError, match="not a multiple of n_heads"):
        char_preset("large", dim=250)
    with pytest.raises(ConfigError, match="warmup_steps"):
        CharTrainConfig(steps=10, warmup_steps=10)
    with pytest.raises(ConfigError, match="non-positive"):
        char_preset("small", batch_size=0)
    with pytest.raises(ConfigError, match="non-positive"):
        char_preset("small", exit_loss_weight=-1.0)


@pytest.mark.shared_data
@needs("tinyshakespeare.txt")
def test_exit_loss_makes_early_blocks_predict() -> None:
    """The early-exit loss (LayerSkip) trains the shared head to read block 1: the gap
    between its held-out loss after block 1 and full depth's shrinks to a fraction of
    plain pretraining's, same recipe and seed (measured: 0.015 against 0.285)."""
    from edge_ee.lm.char_gpt import char_preset, read_text, train_char_gpt
    text = read_text(SHARED_DATA / "tinyshakespeare.txt")[:200_000]
    torch.set_num_threads(1)
    info = {w: train_char_gpt(text, char_preset("small", steps=120, dim=32, hidden_dim=86,
                                                 n_layers=3, exit_loss_weight=w))[2]
            for w in (0.0, 1.0)}
    plain, ee = info[0.0], info[1.0]
    assert plain["held_out_loss"] == plain["held_out_loss_block3"]  # the last block is the model
    gap = {w: i["held_out_loss_block1"] - i["held_out_loss"] for w, i in info.items()}
    assert gap[0.0] > 0.1 and gap[1.0] < 0.3 * gap[0.0], gap
    assert ee["held_out_loss"] < plain["held_out_loss"] + 0.2  # full depth is not given up
    assert ee["recipe"]["exit_loss_weight"] == 1.0


def _tiny_model() -> torch.nn.Module:
    from edge_ee.lm.model import DecoderLM, LMConfig
    torch.manual_seed(0)
    m = DecoderLM(LMConfig(dim=32, hidden_dim=64, n_layers=3, n_heads=4, n_kv_heads=2,
                           vocab_size=40, seq_len=64))
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return m.eval()


@pytest.mark.slow  # three exports (~10 s on a quiet machine, more under load)
def test_measured_call_costs_and_the_fused_graphs_on_onnxruntime(tmp_path: Path) -> None:
    from device_runners.backends.onnxruntime import ort_session
    from edge_ee.lm.build import calm_cost_per_token
    from edge_ee.lm.call_costs import CallCosts, block_costs, measure_call_costs
    m = _tiny_model()
    c = measure_call_costs(m, past=16, calls=20, rounds=2, workdir=tmp_path)
    assert c.source == "measured" and c.block_us > 0 and c.exit_us >= 0 and c.final_us >= 0
    assert 0 < c.rest(0, 3) < 1e5  # µs of a monolithic call, from a real session
    assert block_costs(0.5).rest(1, 5) == pytest.approx(4.5)
    # the monolithic graph it timed: 2 norms a block + the final norm, each one fused
    # node; grouped heads copy no K/V (Expand only in the shared mask)
    sess = ort_session(tmp_path / "mono.onnx", 1, optimized_model_filepath=str(tmp_path / "o.onnx"))
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "o.onnx")).graph.node)
    assert ops["SimplifiedLayerNormalization"] == 2 * 3 + 1
    assert ops["Expand"] < 2 * 3 and ops["Pow"] == 0 and ops["Reciprocal"] == 0
    # greedy decoding with the KV cache through that graph = torch's full recompute
    tokens, ks = [1], {i: np.zeros((0, 2, 8), np.float32) for i in range(6)}
    for step in range(12):
        feeds = {"tokens": np.asarray([tokens[-1:]], np.int64),
                 "pos": np.asarray([step], np.int64)}
        feeds |= {f"past_{kv}{b}": ks[2 * b + (kv == "v")] for b in range(3) for kv in "kv"}
        out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
        for b in range(3):
            for j, kv in enumerate("kv"):
                ks[2 * b + j] = np.concatenate((ks[2 * b + j], out[f"new_{kv}{b}"]))
        tokens.append(int(out["token"][-1]))
    assert tokens == m.generate([1], 12)
    # calm: every token pays the first segment, the non-exiting ones the rest, the exiting
    # ones a riding row: 30 % exit after block 1 of 3
    costs = CallCosts(block_us=10.0, exit_us=5.0, final_us=8.0, row_us=1.0, source="measured")
    conf = np.array([0.9, 0.95, 0.99] + [0.1] * 7)
    assert calm_cost_per_token(conf, 0.5, 1, 3, costs) == pytest.approx(
        15 + 0.7 * 28 + 0.3 * 2)


def test_verify_replay_charges_riding_rows() -> None:
    from edge_ee.lm.build import verify_time_per_token
    conf = np.array([0.9, 0.9, 0.1, 0.9, 0.1])
    ok = np.ones(5, bool)
    # as before (draft 1, rest 2) plus 0.5 per pending draft at a verify: 2 then 1 rows
    assert verify_time_per_token(conf, ok, 0.5, 1.0, 2.0, 0.5) == pytest.approx((9 + 1.5) / 5)


def test_exits_auto_parses_and_bad_build_options() -> None:
    from edge_ee.cli_lm import _exits
    from edge_ee.lm.build import LMBuildConfig
    assert _exits("auto") == () and _exits("1,3") == (1, 3)
    with pytest.raises(ConfigError, match="choose from"):
        LMBuildConfig(out="x", call_costs="guess")
    with pytest.raises(ConfigError, match="calm or verify"):
        LMBuildConfig(out="x", exit_policy="eager")
    with pytest.raises(ConfigError, match="head target"):
        LMBuildConfig(out="x", head_target="soft")
    from edge_ee.lm.train_exits import ExitTrainConfig
    with pytest.raises(ConfigError, match="backbone frozen"):
        ExitTrainConfig(setting="nothing", target="full-depth")


@pytest.mark.slow  # three exports and the golden self-check
def test_two_exit_bundle_exports_and_verify_equals_full_depth(tmp_path: Path) -> None:
    from device_runners.backends import open_backend
    from device_runners.decode import decode
    from device_runners.manifest import load_bundle
    from edge_ee.lm.bundle import LMBundleOptions, write_lm_bundle
    m = _tiny_model()
    w = m.output.weight.detach()
    heads = [(w, torch.zeros(w.shape[0]))] * 2  # copy-final heads after blocks 1 and 2
    out = write_lm_bundle(m, [chr(65 + i) for i in range(40)], (1, 2), heads, [0.07, 0.07],
                          tmp_path / "b", np.asarray([[1, 5, 7]]),
                          options=LMBundleOptions(golden_new_tokens=8, exit_policy="verify"))
    b = load_bundle(out)
    assert [s["blocks"] for s in b.manifest["segments"]] == [[0, 1], [1, 2], [2, 3]]
    assert b.manifest["self_check"]["passed"]
    be = open_backend(b)
    ver = decode(b, be, [1, 5, 7], 20, policy="verify")
    assert ver.prediction.tolist() == m.generate([1, 5, 7], 20)[3:]  # exact full depth
    assert {0, 1} & set(ver.exit.tolist())  # drafts from both exits were taken
    calm = decode(b, be, [1, 5, 7], 20, policy="calm")
    assert len(calm.prediction) == 20 and set(calm.exit.tolist()) <= {0, 1, 2}


def test_decoded_check_tightens_the_budget_until_the_target_holds() -> None:
    """The calm closed loop: a budget whose decoded agreement misses the target is
    tightened by target error / decoded error (× 0.9, at least by 30 %) until it holds; a
    target no budget reaches switches every exit off after MAX_ATTEMPTS attempts."""
    from edge_ee.lm.decode_check import MAX_ATTEMPTS, checked_thresholds

    def run(decoded: dict[float, float] | None, target: float):
        exported: list[list[float]] = []

        def check(_: Path) -> tuple[float, float]:
            t = exported[-1][0]
            if t == float("inf"):
                return 1.0, 0.0
            return (decoded(t) if decoded else 0.5), 0.4

        return checked_thresholds(lambda budget: [budget], lambda t, att: exported.append(t) or Path("."),
                                  check, target), exported

    # decoded error = 2 × the budget's error: one tightening to 0.9 × half the error
    (th, att), exported = run(lambda b: 1 - 2 * (1 - b), 0.96)
    assert [a["budget"] for a in att] == pytest.approx([0.96, 1 - 0.04 * 0.5 * 0.9])
    assert att[-1]["decoded_agreement"] >= 0.96 and th == [att[-1]["budget"]]
    assert exported == [[a["budget"]] for a in att]  # each attempt exported, then checked
    # decoded error just above the target's: the budget's error still shrinks by 30 %
    (th, att), _ = run(lambda b: 1 - 0.031 / 0.03 * (1 - b), 0.97)
    assert [round(1 - a["budget"], 6) for a in att] == [0.03, 0.021]
    (th, att), exported = run(None, 0.96)  # never reached: exits off
    assert th == [float("inf")] and len(att) == len(exported) == MAX_ATTEMPTS + 1
    assert att[-1]["thresholds"] == [None] and att[-1]["exit_rate"] == 0.0
