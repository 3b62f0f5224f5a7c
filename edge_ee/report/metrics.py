"""The task-metric registry: how a report scores a run, one small class per task metric.

A `TaskMetric` knows which tasks it scores (the manifest's `model.task`), its name and
label, and how to compute from a results document (+ the bundle's manifest) what differs
between tasks: the metric value, the units that were scored (samples, images, tokens), the
cost per unit from the exits taken, how many units left at each exit, and any per-task
detail (IoU per class, per-class thresholds, exit maps). Everything else in the report
(latency, energy, throughput, calibration, tables, figures, HTML, Markdown) is shared.
Adding a task is one subclass here with `@register_metric`; `metric_for(manifest)` picks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from device_runners.manifest import Bundle
from edge_ee.errors import ResultsError
from edge_ee.segmentation.metrics import iou_per_class
from edge_ee.unit_cost import reach_from_counts, unit_flops

METRICS: dict[str, type[TaskMetric]] = {}
OVERLAY_IMAGES = 3


@dataclass
class Scored:
    """What a metric computes from one run."""

    value: float | None  # the metric, in [0, 1]; None without labels
    units: int  # scored units (samples, images)
    flops_per_unit: np.ndarray  # FLOPs each unit cost, from the exits taken
    exit_counts: list[int]  # per segment: units (or tokens) that left there
    detail: dict[str, Any] = field(default_factory=dict)  # task-specific, into the summary
    series: dict[str, Any] = field(default_factory=dict)  # raw arrays for figures only


class TaskMetric:
    """One task metric: name, label, and how to score a results document."""

    name: ClassVar[str]
    label: ClassVar[str]  # e.g. "accuracy", "mIoU"
    tasks: ClassVar[tuple[str, ...]]  # manifest model.task values it scores
    granularity: ClassVar[str] = "sample"  # what an exit decides for: sample | token
    unit: ClassVar[str] = "sample"  # what latency and cost are per
    exit_unit: ClassVar[str] = "samples"  # what the exit histogram counts

    def score(self, results: dict[str, Any], bundle: Bundle) -> Scored:
        raise NotImplementedError

    def extra_tables(self, sums: list[dict[str, Any]], names: list[str]) -> list[Any]:
        """Tables this metric adds to the shared ones (`edge_ee.report.tables.Table`)."""
        return []

    def extra_figures(self, sums: list[dict[str, Any]], names: list[str]
                      ) -> list[tuple[str, str, Any]]:
        """(key, title, matplotlib Figure) this metric adds to the shared figures."""
        return []

    def check(self, results: dict[str, Any]) -> None:
        task = results.get("task") or "classification"
        if task not in self.tasks and not (task == "classification" and
                                           self.granularity == "sample"):
            raise ResultsError(f"the bundle is a {'/'.join(self.tasks)} bundle but the results "
                               f"are from a {task} run; pass the results of this bundle")


def register_metric(cls: type[TaskMetric]) -> type[TaskMetric]:
    """Class decorator: make a metric available to `metric_for` by its name."""
    METRICS[cls.name] = cls
    return cls


def metric_for(manifest: dict[str, Any]) -> TaskMetric:
    """The registered metric of a bundle: `model.task_metric` when given, else by task."""
    model = manifest.get("model") or {}
    named = model.get("task_metric")
    if named is not None:
        if named not in METRICS:
            raise ResultsError(f"manifest names task metric {named!r}; known: "
                               f"{', '.join(sorted(METRICS))}")
        return METRICS[named]()
    task = model.get("task") or "classification"
    for cls in METRICS.values():
        if task in cls.tasks:
            return cls()
    raise ResultsError(f"no report metric for task {task!r}; register one in "
                       f"edge_ee.report.metrics (known: {', '.join(sorted(METRICS))})")


@register_metric
class Accuracy(TaskMetric):
    """Top-1 accuracy of sample exits: one prediction per sample, cost = segments it ran."""

    name = "accuracy"
    label = "accuracy"
    tasks = ("classification", "clustering")

    def score(self, results: dict[str, Any], bundle: Bundle) -> Scored:
        self.check(results)
        s = results["samples"]
        exits = np.asarray(s.get("exit", []), np.int64)
        n = len(exits)
        cum = np.cumsum([seg["flops"] for seg in bundle.segments], dtype=np.float64)
        labels = [v for v in s.get("label", []) if v is not None]
        value = None
        if n and len(labels) == n:
            value = float((np.asarray(s["prediction"]) == np.asarray(labels)).mean())
        counts = np.bincount(exits, minlength=len(bundle.segments)) if n else \
            np.zeros(len(bundle.segments), np.int64)
        return Scored(value, n, cum[exits] if n else np.zeros(0), counts.tolist())


@register_metric
class NextTokenAccuracy(Accuracy):
    """Token-by-token decoding of a language model: each generated position is a unit with
    its exit, token (`prediction`) and, when reference continuations were given, label;
    it scores like accuracy over positions (positions after a divergence from the
    reference have another prefix). The detail adds tokens/s over the decoding steps
    (the prefill's token left out), the exit policy and rejected drafts; the extra table
    compares every run with the baseline (the first full-depth run): speed-up and the
    agreement of its tokens with the baseline's for the same prompts, up to each
    prompt's first divergence."""

    name = "next_token_accuracy"
    label = "next-token accuracy"
    tasks = ("language-model",)
    granularity = "position"
    unit = "token"
    exit_unit = "tokens"

    def score(self, results: dict[str, Any], bundle: Bundle) -> Scored:
        scored = super().score(results, bundle)
        s = results["samples"]
        pos = np.asarray(s.get("position", []), np.int64)
        lat = np.asarray(s.get("latency_ns", []), np.float64)
        steps = lat[pos > 0]
        first = np.asarray(s.get("pass", []), np.int64) == 0
        seqs: dict[int, list[int]] = {}
        for p, t, f in zip(s.get("prompt", []), s.get("prediction", []), first, strict=False):
            if f:
                seqs.setdefault(int(p), []).append(int(t))
        scored.detail = {
            "tokens_per_s": float(len(steps) / (steps.sum() / 1e9)) if steps.sum() else None,
            "prefill_latency_ns": float(np.median(lat[pos == 0])) if (pos == 0).any() else None,
            "exit_policy": results["protocol"].get("exit_policy"),
            "rejected_drafts": results.get("rejected_drafts"),
            "sequences": seqs}
        return scored

    def extra_tables(self, sums: list[dict[str, Any]], names: list[str]) -> list[Any]:
        from edge_ee.report.tables import Table
        b = next((i for i, x in enumerate(sums) if x["no_exit"] or x["variant"] == "monolithic"), 0)
        base = sums[b]
        rows = []
        for nm, x in zip(names, sums, strict=True):
            speed = (x["tokens_per_s"] / base["tokens_per_s"]
                     if x["tokens_per_s"] and base["tokens_per_s"] else None)
            policy = ("none (--no-exit)" if x["no_exit"] else "none (monolithic)"
                      if x["variant"] == "monolithic" else x["exit_policy"])
            rows.append([nm, policy, x["samples"], x["tokens_per_s"], speed,
                         agreement_to_divergence(base["sequences"], x["sequences"]),
                         x["rejected_drafts"],
                         " / ".join(f"{f:.3f}" for f in x["exit_fractions"])])
        return [Table("lm_decoding", "Token-by-token decoding",
                      ["run", "exit_policy", "tokens", "tokens_per_s",
                       f"speedup_vs_{names[b]}", f"agreement_with_{names[b]}_to_divergence",
                       "rejected_drafts", "exit_rate_per_exit"], rows,
                      note="tokens/s over the decoding steps (the prefill's token left out); "
                           "agreement: generated tokens equal to the baseline's for the same "
                           "prompt, counted up to and including the first difference")]


def agreement_to_divergence(base: dict[int, list[int]], run: dict[int, list[int]]
                            ) -> float | None:
    """Share of tokens equal to the baseline's, per prompt up to its first divergence
    (the position that differs counts; later ones have another prefix)."""
    same = total = 0
    for p, toks in run.items():
        ref = base.get(p, base.get(str(p)))  # str keys: read back from report.json
        if ref is None:
            continue
        for a, c in zip(ref, toks, strict=False):
            total += 1
            if a != c:
                break
            same += 1
    return same / total if total else None


def masked_flops(tokens_per_exit: np.ndarray, cost: dict[str, Any]) -> np.ndarray:
    """FLOPs per image (N,) from tokens stopping at each exit (N,E) and the manifest cost model
    (`edge_ee.unit_cost`, the rule calibration used)."""
    return unit_flops(reach_from_counts(tokens_per_exit), cost["stem_flops"],
                      cost["dense_flops"], cost["per_token_flops"])


@register_metric
class MeanIoU(TaskMetric):
    """mIoU of a segmentation run (void ignored) from the per-image confusion matrices;
    cost per image is the masked cost of the tokens that reached each exit."""

    name = "miou"
    label = "mIoU"
    tasks = ("segmentation",)
    granularity = "token"
    unit = "image"
    exit_unit = "tokens"

    def score(self, results: dict[str, Any], bundle: Bundle) -> Scored:
        self.check(results)
        m, seg = bundle.manifest, bundle.manifest["segmentation"]
        s = results["samples"]
        k = len(m["classes"])
        first = np.asarray(s["pass"]) == 0
        tpe = np.asarray(s["tokens_per_exit"], np.int64).reshape(len(first), -1)[first]
        confs = [c for c in s["confusion"] if c is not None]
        iou = iou_per_class(np.asarray(confs, np.int64).sum(0).reshape(k, k)) if confs else None
        value = None if iou is None or np.all(np.isnan(iou)) else float(np.nanmean(iou))
        maps = results.get("exit_maps") or {"image": [], "token_exit": []}
        idx = list(maps["image"][:OVERLAY_IMAGES])
        detail = {"classes": list(m["classes"]), "thresholds": seg["thresholds"],
                  "token_hw": seg["token_hw"], "images": int(first.sum()),
                  "iou_per_class": None if iou is None else
                  [None if np.isnan(v) else float(v) for v in iou]}
        series = {"overlay_index": idx,
                  "exit_maps": [np.asarray(maps["token_exit"][j]) for j in range(len(idx))],
                  "images": _images(results, bundle, idx) if idx else None}
        # tokens stopping at exit k are counted at the segment that runs stage k (one
        # segment holds every stage in a monolithic bundle)
        segment_of = {int(st): i for i, sg in enumerate(bundle.segments)
                      for st in sg.get("stages", [i])}
        counts = [0] * len(bundle.segments)
        for k, c in enumerate(tpe.sum(0).tolist()):
            counts[segment_of.get(k, len(counts) - 1)] += int(c)
        return Scored(value, int(first.sum()), masked_flops(tpe, seg["cost"]), counts, detail,
                      series)

    def extra_tables(self, sums: list[dict[str, Any]], names: list[str]) -> list[Any]:
        from edge_ee.report.per_class import per_class_tables
        return per_class_tables(sums, names)

    def extra_figures(self, sums: list[dict[str, Any]], names: list[str]
                      ) -> list[tuple[str, str, Any]]:
        from edge_ee.report.per_class import per_class_figures
        return per_class_figures(sums, names)


def _images(results: dict[str, Any], bundle: Bundle, index: list[int]) -> np.ndarray | None:
    """uint8 (n,H,W,3) images the exit maps belong to (the run's input file or golden)."""
    src = results["protocol"].get("input")
    try:
        if src in (None, "golden"):
            x = bundle.golden()["input"][index]
        else:
            with np.load(src, allow_pickle=False) as z:
                x = z["x" if "x" in z.files else "x_test"][index]
    except (OSError, KeyError, ValueError, IndexError):
        return None
    if x.dtype == np.uint8:
        return x
    raw = bundle.manifest["input"]["raw"]
    x = x.transpose(0, 2, 3, 1) * np.asarray(raw["std"]) + np.asarray(raw["mean"])
    return np.clip(x * 255.0, 0, 255).astype(np.uint8)
