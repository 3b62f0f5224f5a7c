"""Closed-loop check of a `calm` LM bundle: the exported graphs decode calibration prompts
through the device runner's own executor (onnxruntime), and torch's full-depth model,
teacher-forced on each output, says which tokens it would have chosen too.

`calm` thresholds are first chosen teacher-forced on sampled text (`build.calibrate_thresholds`),
where the error of the copied K,V of skipped layers does not show: decoding the large
char GPTs on the device measured 0.93 agreement for a 0.97 target. `checked_thresholds`
tightens the agreement budget handed to the calibration until the decoded agreement
meets the target (or no exit is left), and records every attempt for the manifest.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from edge_ee.lm.model import DecoderLM

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 6
MARGIN = 0.9  # each retry aims at 90 % of the error that would just meet the target …
MAX_STEP = 0.7  # … and cuts the error budget by at least 30 % (near the target the
# decoded error shrinks more slowly than the budget: 0.0347 → 0.0342 → 0.0308 measured)


@torch.no_grad()
def decoded_agreement(model: DecoderLM, bundle_dir: str | Path, prompts: np.ndarray,
                      new_tokens: int) -> tuple[float, float]:
    """(next-token agreement with full depth, exit rate before the last segment) of
    `calm` decoding of each prompt (int64 (N, L)) by the bundle on onnxruntime."""
    from device_runners.backends import open_backend
    from device_runners.decode import decode
    from device_runners.manifest import load_bundle
    bundle = load_bundle(bundle_dir)
    backend = open_backend(bundle, "onnxruntime", 1)
    last = len(bundle.segments) - 1
    pairs, exited = [], 0
    for p in np.asarray(prompts, np.int64):
        out = decode(bundle, backend, p, new_tokens, policy="calm")
        pairs.append((p.tolist(), out.prediction.tolist()))
        exited += int((out.exit < last).sum())
    return teacher_forced_agreement(model, pairs), exited / (len(pairs) * new_tokens)


@torch.no_grad()
def teacher_forced_agreement(model: DecoderLM, pairs: list[tuple[list[int], list[int]]]) -> float:
    """Share of generated tokens full depth would also have chosen after the same prefix,
    over (prompt, generated tokens) pairs."""
    agree = n = 0
    for prompt, toks in pairs:
        seq = torch.tensor([prompt + toks])
        pred = model(seq)[0, len(prompt) - 1:-1].argmax(-1)
        agree += int((pred == seq[0, len(prompt):]).sum())
        n += len(toks)
    return agree / n


def checked_thresholds(calibrate: Callable[[float], list[float]],
                       export: Callable[[list[float], list[dict]], Path],
                       check: Callable[[Path], tuple[float, float]],
                       target: float) -> tuple[list[float], list[dict]]:
    """Calibrate for an agreement budget, export, decode, and tighten the budget until the
    decoded agreement is ≥ `target`: the error budget shrinks by target error / decoded
    error × `MARGIN`, at least by `MAX_STEP`. After `MAX_ATTEMPTS` misses every exit is
    switched off (threshold ∞: the bundle decodes at full depth). Returns the thresholds
    exported last and the attempts (budget, thresholds, decoded agreement, exit rate)."""
    budget, attempts = target, []
    thresholds = calibrate(budget)
    while True:  # ends: with every exit off the exit rate is 0
        agree, rate = check(export(thresholds, attempts))
        attempts.append({"budget": budget, "thresholds": [_num(t) for t in thresholds],
                         "decoded_agreement": agree, "exit_rate": rate})
        log.info("calm check %d: budget %.4f → decoded agreement %.4f (target %.4f), exit rate %.3f",
                 len(attempts), budget, agree, target, rate)
        if agree >= target or rate == 0.0:
            return thresholds, attempts
        if len(attempts) == MAX_ATTEMPTS:
            log.warning("calm thresholds missed the agreement target %.3f after %d attempts "
                        "(decoded %.4f): exits switched off", target, MAX_ATTEMPTS, agree)
            thresholds = [math.inf] * len(thresholds)
            continue
        step = min(MARGIN * (1.0 - target) / max(1.0 - agree, 1e-9), MAX_STEP)
        budget = 1.0 - max(1.0 - budget, 1e-6) * step
        thresholds = calibrate(budget)


def _num(t: float) -> float | None:
    return None if math.isinf(t) else float(t)
