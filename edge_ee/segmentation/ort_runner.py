"""Torch-free runner of exported pixel-exit segments (numpy + onnxruntime only).

Loop per image: segment 0 (stem + stage 0 + exit 0) gives the feature grid, token
logits and an exit mask; the runner keeps a flat index of the remaining tokens, writes
the logits of stopped tokens into a (h*w, K) buffer and feeds the feature grid plus the
index to the next segment, which runs its MLPs and exit head on those tokens only. When
no token remains the later segments are skipped. `assemble.onnx` upsamples the token
logits to the full-resolution class map. `full.onnx` is the monolithic no-exit network.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class RunOutput:
    """prediction (H,W) int64, exit_index (h*w,) int64, token logits (h*w,K), latency_ns."""

    prediction: np.ndarray
    exit_index: np.ndarray
    token_logits: np.ndarray
    latency_ns: int


class PixelExitRunner:
    """Runs one exported threshold configuration (`<dir>/<name>/seg*.onnx`)."""

    def __init__(self, export_dir: str | Path, config_name: str, threads: int = 1) -> None:
        root = Path(export_dir)
        man = json.loads((root / MANIFEST).read_text())
        if config_name not in man["configs"]:
            raise KeyError(f"{config_name!r} not exported; have {sorted(man['configs'])}")
        self.h, self.w = man["token_hw"]
        self.k = man["num_classes"]
        files = man["configs"][config_name]["segments"]
        self.segments = [_session(root / f, threads) for f in files]
        self.assemble = _session(root / man["assemble"], threads)

    def run(self, image: np.ndarray) -> RunOutput:
        """image: normalised float32 (1,3,H,W)."""
        t0 = time.perf_counter_ns()
        n = self.h * self.w
        final = np.zeros((n, self.k), dtype=np.float32)
        exit_index = np.full(n, -1, dtype=np.int64)
        x, logits, mask = self.segments[0].run(None, {"image": image})
        idx = np.arange(n, dtype=np.int64)
        for s in range(len(self.segments)):
            if s > 0:
                if idx.size == 0:
                    break
                x, logits, mask = self.segments[s].run(None, {"x": x, "idx": idx})
            stopped = idx[mask]
            final[stopped] = logits[mask]
            exit_index[stopped] = s
            idx = idx[~mask]
        grid = np.ascontiguousarray(final.T.reshape(1, self.k, self.h, self.w))
        (pred,) = self.assemble.run(None, {"logits": grid})
        return RunOutput(pred[0], exit_index, final, time.perf_counter_ns() - t0)


class FullRunner:
    """The monolithic no-exit graph: image → full-resolution class map."""

    def __init__(self, export_dir: str | Path, threads: int = 1) -> None:
        root = Path(export_dir)
        man = json.loads((root / MANIFEST).read_text())
        self.session = _session(root / man["full"], threads)

    def run(self, image: np.ndarray) -> RunOutput:
        t0 = time.perf_counter_ns()
        (pred,) = self.session.run(None, {"image": image})
        dt = time.perf_counter_ns() - t0
        return RunOutput(pred[0], np.empty(0, np.int64), np.empty((0, 0), np.float32), dt)
