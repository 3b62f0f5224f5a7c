"""Per-unit records of a measured run, one recorder per task, registered by task name.

A recorder turns each `executor.Outcome` into one raw record per unit (no statistics on
the device) — appended to a `spool.Spool` on disk during `edge-ee-run`, so memory stays
bounded however long the run — and checks that the labels a user passes fit the task.
The host's `edge-ee report` computes everything else from them.

* `classification` and `clustering` (sample exits): per sample `exit`,
  `prediction`, `confidence`, `label`, `pass`, and in single mode `segment_latency_ns`;
  in batch mode one `batches` record per batch (size, active rows per segment, latency).
* `segmentation` (token exits): per image `tokens_per_exit`, on the first pass the
  flattened (K, K) confusion matrix against the labels, and in single mode
  `latency_ns`, `segment_latency_ns`, `assemble_latency_ns`; in batch mode one
  `batches` record per batch (size, running tokens per segment, segment and assemble
  latency). `exit_maps` keeps the token exit map of the first images for overlays.
* `language-model` (sequence positions): one row per generated token (`PositionRecorder`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from device_runners import decode, inputs
from device_runners.errors import InputSpecError
from device_runners.executor import Outcome
from device_runners.manifest import Bundle
from device_runners.spool import Spool

RECORDERS: dict[str, type[Recorder]] = {}


def register_recorder(cls: type[Recorder]) -> type[Recorder]:
    for task in cls.tasks:
        RECORDERS[task] = cls
    return cls


def recorder_for(bundle: Bundle) -> type[Recorder]:
    task = (bundle.manifest.get("model") or {}).get("task", "classification")
    if task not in RECORDERS:
        raise InputSpecError(f"this runner has no recorder for task {task!r} (it knows "
                             f"{sorted(RECORDERS)}); upgrade edge-ee on the device")
    return RECORDERS[task]


class Recorder:
    tasks: ClassVar[tuple[str, ...]] = ()  # the manifest's model.task values it records
    fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, bundle: Bundle, labels: np.ndarray | None, mode: str,
                 spool: Spool | None = None) -> None:
        self.bundle, self.labels, self.mode, self.spool = bundle, labels, mode, spool
        self.samples: dict[str, list] = {f: [] for f in self.fields}
        self.batches: list[dict[str, Any]] | None = [] if mode == "batch" else None
        self.extra: dict[str, Any] = {}

    @classmethod
    def check_labels(cls, bundle: Bundle, y: np.ndarray, count: int) -> np.ndarray:
        """The labels as int64, or an `InputSpecError` that says what is wrong."""
        raise NotImplementedError

    def add(self, out: Outcome, start: int, pass_index: int) -> None:
        """Record the units of inputs `start`, `start + 1`, … of pass `pass_index`."""
        raise NotImplementedError

    def emit(self, row: dict[str, Any]) -> None:
        """One unit's record: into the spool (bounded memory, on disk) or the lists."""
        if self.spool is not None:
            self.spool.append(row)
        else:
            for k, v in row.items():
                self.samples[k].append(v)

    def columns(self) -> dict[str, list]:
        """The records in memory; with a spool they stay on disk (streamed into results.json
        by `results.write_results`), and this is empty."""
        return {} if self.spool is not None else self.samples


@register_recorder
class SampleRecorder(Recorder):
    tasks = ("classification", "clustering")
    fields = ("exit", "prediction", "confidence", "label", "pass", "segment_latency_ns")

    @classmethod
    def check_labels(cls, bundle: Bundle, y: np.ndarray, count: int) -> np.ndarray:
        return inputs.check_labels(y, count, len(bundle.manifest["classes"]), "the labels")

    def add(self, out: Outcome, start: int, pass_index: int) -> None:
        n = len(out.exit)
        for j in range(n):
            row = {"exit": int(out.exit[j]), "prediction": int(out.prediction[j]),
                   "confidence": float(out.confidence[j]),
                   "label": None if self.labels is None else int(self.labels[start + j]),
                   "pass": pass_index}
            if self.batches is None:
                row["segment_latency_ns"] = out.segment_latency_ns
            self.emit(row)
        if self.batches is not None:
            self.batches.append({"size": n, "active": out.active,
                                 "segment_latency_ns": out.segment_latency_ns})

    def columns(self) -> dict[str, list]:
        s = dict(super().columns())
        if self.batches is not None:
            s.pop("segment_latency_ns", None)
        return s


@register_recorder
class PositionRecorder(Recorder):
    """Language models: one row per generated token (`position` 0 is the prefill's
    token, its latency the prefill's), with the exit that decided it, the token as
    `prediction`, its confidence, the label when reference continuations are given, and
    the decoding step's latency (a rolled-back draft's time goes to its correction)."""

    tasks = (decode.TASK,)  # importing decode registers the `position` active set
    fields = ("prompt", "position", "pass", "exit", "prediction", "confidence", "label",
              "latency_ns", "segment_latency_ns")

    @classmethod
    def check_labels(cls, bundle: Bundle, y: np.ndarray, count: int) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 2 or len(y) != count or not np.issubdtype(y.dtype, np.integer):
            raise InputSpecError(f"labels must be int (N, new tokens) reference continuations "
                                 f"for the {count} prompts, got {y.dtype} {y.shape}")
        v = len(bundle.manifest["classes"])
        if y.size and (y.min() < 0 or y.max() >= v):
            raise InputSpecError(f"label token ids must be in 0..{v - 1}; encode them with the "
                                 "model's own tokenizer")
        return y.astype(np.int64)

    def add(self, out: Outcome, start: int, pass_index: int) -> None:
        lat, seg_lat = out.extra["latency_ns"], out.extra["segment_latency_ns"]
        for j in range(len(out.exit)):
            label = None
            if self.labels is not None and j < self.labels.shape[1]:
                label = int(self.labels[start, j])
            self.emit({"prompt": start, "position": j, "pass": pass_index,
                       "exit": int(out.exit[j]), "prediction": int(out.prediction[j]),
                       "confidence": float(out.confidence[j]), "label": label,
                       "latency_ns": int(lat[j]), "segment_latency_ns": seg_lat[j]})
        self.extra["rejected_drafts"] = self.extra.get("rejected_drafts", 0) + int(
            out.extra.get("rejected_drafts", 0))
        self.extra["exit_policy"] = out.extra.get("policy")


EXIT_MAP_IMAGES = 8


@register_recorder
class ImageRecorder(Recorder):
    tasks = ("segmentation",)
    fields = ("image", "pass", "latency_ns", "segment_latency_ns", "assemble_latency_ns",
              "tokens_per_exit", "confusion")

    def __init__(self, bundle: Bundle, labels: np.ndarray | None, mode: str,
                 spool: Spool | None = None) -> None:
        super().__init__(bundle, labels, mode, spool)
        seg = bundle.manifest["segmentation"]
        self.k, self.void = len(bundle.manifest["classes"]), int(seg["void_label"])
        self.num_exits = int(seg["num_exits"])
        self.extra["exit_maps"] = {"image": [], "token_exit": []}

    @classmethod
    def check_labels(cls, bundle: Bundle, y: np.ndarray, count: int) -> np.ndarray:
        seg = bundle.manifest["segmentation"]
        hw = tuple(seg["image_hw"])
        y = inputs.check_labels(y, count, len(bundle.manifest["classes"]), "the label maps",
                                rank=3, void=int(seg["void_label"]))
        if tuple(y.shape[1:]) != hw:
            raise InputSpecError(f"labels have shape {y.shape}, the bundle expects (N, {hw[0]}, "
                                 f"{hw[1]}); resize them with nearest-neighbour to the image size")
        return y

    def add(self, out: Outcome, start: int, pass_index: int) -> None:
        maps = self.extra["exit_maps"]
        for j in range(len(out.exit)):
            n = start + j
            conf = None
            if self.labels is not None and pass_index == 0:
                conf = confusion(out.prediction[j], self.labels[n], self.k,
                                 self.void).ravel().tolist()
            row = {"image": n, "pass": pass_index,
                   "tokens_per_exit": np.bincount(out.exit[j],
                                                  minlength=self.num_exits).tolist(),
                   "confusion": conf}
            if self.batches is None:  # single mode: this image's own latencies
                row.update(latency_ns=out.latency_ns, segment_latency_ns=out.segment_latency_ns,
                           assemble_latency_ns=int(out.extra.get("assemble_latency_ns", 0)))
            self.emit(row)
            if pass_index == 0 and n < EXIT_MAP_IMAGES:
                maps["image"].append(n)
                maps["token_exit"].append(out.exit[j].tolist())
        if self.batches is not None:
            self.batches.append({"size": len(out.exit), "active": out.active,
                                 "segment_latency_ns": out.segment_latency_ns,
                                 "assemble_latency_ns": int(out.extra.get("assemble_latency_ns",
                                                                          0))})

    def columns(self) -> dict[str, list]:
        s = dict(super().columns())
        if self.batches is not None:
            for k in ("latency_ns", "segment_latency_ns", "assemble_latency_ns"):
                s.pop(k, None)
        return s


def confusion(pred: np.ndarray, labels: np.ndarray, k: int, void: int) -> np.ndarray:
    """(K,K) int64, rows = ground truth, columns = prediction, void pixels skipped."""
    keep = labels != void
    idx = labels[keep].astype(np.int64) * k + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=k * k).reshape(k, k)
