"""Per-unit records of a measured run, one recorder per task, registered by task name.

A recorder turns each `executor.Outcome` into the raw, column-wise records of
results.json (no statistics on the device) and checks that the labels a user passes fit
the bundle's task. The host's `edge-ee report` computes everything else from them.

* `classification` (sample exits; clustering bundles too): per sample `exit`,
  `prediction`, `confidence`, `label`, `pass`, and in single mode `segment_latency_ns`;
  in batch mode one `batches` record per batch (size, active rows per segment, latency).
* `segmentation` (token exits): per image `latency_ns`, `segment_latency_ns`,
  `assemble_latency_ns`, `tokens_per_exit`, and on the first pass the flattened (K, K)
  confusion matrix against the labels; `exit_maps` keeps the token exit map of the first
  images for overlays.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from device_runners.errors import InputSpecError
from device_runners.executor import Outcome
from device_runners.manifest import Bundle

RECORDERS: dict[str, type[Recorder]] = {}


def register_recorder(cls: type[Recorder]) -> type[Recorder]:
    RECORDERS[cls.task] = cls
    return cls


def recorder_for(bundle: Bundle) -> type[Recorder]:
    task = (bundle.manifest.get("model") or {}).get("task", "classification")
    if task not in RECORDERS:
        raise InputSpecError(f"this runner has no recorder for task {task!r} (it knows "
                             f"{sorted(RECORDERS)}); upgrade edge-ee on the device")
    return RECORDERS[task]


class Recorder:
    task: ClassVar[str] = ""
    fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, bundle: Bundle, labels: np.ndarray | None, mode: str) -> None:
        self.bundle, self.labels, self.mode = bundle, labels, mode
        self.samples: dict[str, list] = {f: [] for f in self.fields}
        self.batches: list[dict[str, Any]] | None = [] if mode == "batch" else None
        self.extra: dict[str, Any] = {}

    @classmethod
    def check_labels(cls, bundle: Bundle, y: np.ndarray, count: int) -> None:
        raise NotImplementedError

    def add(self, out: Outcome, start: int, pass_index: int) -> None:
        """Record the units of inputs `start`, `start + 1`, … of pass `pass_index`."""
        raise NotImplementedError

    @property
    def count(self) -> int:
        return len(next(iter(self.samples.values()), []))


@register_recorder
class SampleRecorder(Recorder):
    task = "classification"
    fields = ("exit", "prediction", "confidence", "label", "pass", "segment_latency_ns")

    @classmethod
    def check_labels(cls, bundle: Bundle, y: np.ndarray, count: int) -> None:
        k = len(bundle.manifest["classes"])
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise InputSpecError(f"labels must be a 1-D integer array, got {y.dtype} {y.shape}; "
                                 "save class indices as np.savez(f, x=..., y=labels)")
        if len(y) != count:
            raise InputSpecError(f"{count} inputs but {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise InputSpecError(f"labels must be in 0..{k - 1}, got {y.min()}..{y.max()}")

    def add(self, out: Outcome, start: int, pass_index: int) -> None:
        n = len(out.exit)
        s = self.samples
        s["exit"] += out.exit.tolist()
        s["prediction"] += out.prediction.tolist()
        s["confidence"] += out.confidence.astype(float).tolist()
        s["label"] += ([None] * n if self.labels is None
                       else self.labels[start : start + n].tolist())
        s["pass"] += [pass_index] * n
        if self.batches is None:
            s["segment_latency_ns"].append(out.segment_latency_ns)
        else:
            self.batches.append({"size": n, "active": out.active,
                                 "segment_latency_ns": out.segment_latency_ns})

    def columns(self) -> dict[str, list]:
        s = dict(self.samples)
        if self.batches is not None:
            s.pop("segment_latency_ns")
        return s


EXIT_MAP_IMAGES = 8


@register_recorder
class ImageRecorder(Recorder):
    task = "segmentation"
    fields = ("image", "pass", "latency_ns", "segment_latency_ns", "assemble_latency_ns",
              "tokens_per_exit", "confusion")

    def __init__(self, bundle: Bundle, labels: np.ndarray | None, mode: str) -> None:
        super().__init__(bundle, labels, mode)
        seg = bundle.manifest["segmentation"]
        self.k, self.void = len(bundle.manifest["classes"]), int(seg["void_label"])
        self.num_exits = int(seg["num_exits"])
        self.extra["exit_maps"] = {"image": [], "token_exit": []}

    @classmethod
    def check_labels(cls, bundle: Bundle, y: np.ndarray, count: int) -> None:
        seg = bundle.manifest["segmentation"]
        k, void, hw = len(bundle.manifest["classes"]), int(seg["void_label"]), tuple(seg["image_hw"])
        if not np.issubdtype(y.dtype, np.integer):
            raise InputSpecError(f"labels must be integers, got {y.dtype}; save class indices")
        if y.ndim != 3 or tuple(y.shape[1:]) != hw:
            raise InputSpecError(f"labels have shape {y.shape}, the bundle expects (N, {hw[0]}, "
                                 f"{hw[1]}); resize them with nearest-neighbour to the image size")
        if len(y) != count:
            raise InputSpecError(f"{count} images but {len(y)} label maps")
        bad = (y != void) & ((y < 0) | (y >= k))
        if bad.any():
            raise InputSpecError(f"labels contain {np.unique(y[bad])[:10].tolist()}, outside "
                                 f"classes 0..{k - 1} and not the void value {void}; remap them")

    def add(self, out: Outcome, start: int, pass_index: int) -> None:
        conf = None
        if self.labels is not None and pass_index == 0:
            conf = confusion(out.prediction, self.labels[start], self.k, self.void).ravel().tolist()
        row = (start, pass_index, out.latency_ns, out.segment_latency_ns,
               int(out.extra.get("assemble_latency_ns", 0)),
               np.bincount(out.exit, minlength=self.num_exits).tolist(), conf)
        for key, v in zip(self.fields, row, strict=True):
            self.samples[key].append(v)
        maps = self.extra["exit_maps"]
        if pass_index == 0 and start < EXIT_MAP_IMAGES:
            maps["image"].append(start)
            maps["token_exit"].append(out.exit.tolist())

    def columns(self) -> dict[str, list]:
        return self.samples


def confusion(pred: np.ndarray, labels: np.ndarray, k: int, void: int) -> np.ndarray:
    """(K,K) int64, rows = ground truth, columns = prediction, void pixels skipped."""
    keep = labels != void
    idx = labels[keep].astype(np.int64) * k + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=k * k).reshape(k, k)
