"""Write a language-model edge-ee bundle: per-segment decoding graphs with KV-cache state.

Contents: `manifest.json` (the common contract of `device_runners.manifest`, `model.task
= "language-model"`, `granularity = "token"`, `classes` = the vocabulary pieces, one
segment per exit with its blocks, FLOPs per token and exit head, and a `language_model`
section the device loop reads: context, kv_heads, head_dim, dim, bos), `seg{s}.onnx` and
`golden.npz` (real prompts and the tokens and exits torch's own decoding loop produced,
with exits and at full depth). Built in a temporary folder, self-checked with the device
code on onnxruntime, and only then renamed into place.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import edge_ee
from converters.atomic import atomic_dir
from device_runners.backends import open_backend
from device_runners.decode import TASK, decode, self_check
from device_runners.manifest import BUNDLE_SCHEMA_VERSION, MANIFEST, load_bundle, sha256_file
from device_runners.manifest import validate_manifest as validate_manifest_structure
from device_runners.results import atomic_write_json
from edge_ee.errors import BundleError, ExportValidationError, SelfCheckError
from edge_ee.lm.exit_init import check_exits
from edge_ee.lm.model import DecoderLM
from edge_ee.lm.segments import LMSegment, build_segments, example_feeds, export_segment


@dataclass(frozen=True)
class LMBundleOptions:
    """Golden decoding length and the default generation length on the device."""

    golden_new_tokens: int = 16
    default_new_tokens: int = 64
    overwrite: bool = False


class TorchSegments:
    """The exported segment modules behind the backend interface (`run(index, feeds)`), so
    torch's reference decoding is the device's own loop (`device_runners.decode.decode`)."""

    name = "torch"

    def __init__(self, segments: list[LMSegment]) -> None:
        self.segments = segments

    @torch.no_grad()
    def run(self, graph: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seg = self.segments[graph]
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in seg.input_names()]
        outs = seg(*args)
        return {n: o.numpy() for n, o in zip(seg.output_names(), outs, strict=True)}


class _Manifestless:
    """Just enough of a Bundle for `decode` before the manifest exists."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.manifest = manifest
        self.segments = manifest["segments"]


def _flops(seg: LMSegment) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        seg(*example_feeds(seg, past=0, p=1))
    return int(fc.get_total_flops())


def write_lm_bundle(model: DecoderLM, pieces: list[str], exits: tuple[int, ...],
                    heads: list[tuple[torch.Tensor, torch.Tensor]], thresholds: list[float],
                    out: str | Path, prompts: np.ndarray, name: str = "lm-ee",
                    extra: dict[str, Any] | None = None,
                    options: LMBundleOptions = LMBundleOptions()) -> Path:
    """Export, self-check and atomically place a bundle; `exits=()` gives the monolithic
    (one-segment, full-depth) bundle. prompts: int64 (N, L) real token ids (golden)."""
    out = Path(out)
    if out.exists() and not options.overwrite:
        raise BundleError(f"{out} exists; pass --overwrite or choose another folder")
    c = model.config
    if exits:
        check_exits(model, exits)
    if len(pieces) != c.vocab_size:
        raise ExportValidationError(f"{len(pieces)} vocabulary pieces for a model with "
                                    f"{c.vocab_size} tokens; pass the model's own tokenizer")
    model.eval()
    segs = build_segments(model, exits, heads, thresholds)
    with atomic_dir(out) as tmp:
        entries = []
        for i, seg in enumerate(segs):
            f = f"seg{i}.onnx"
            export_segment(seg, tmp / f)
            last = seg.is_last
            entries.append({
                "index": i, "name": f"blocks{seg.first}-{seg.last - 1}", "files": {"onnx": f},
                "inputs": seg.input_names(), "outputs": seg.output_names(),
                "flops": _flops(seg), "params": sum(p.numel() for p in seg.parameters()),
                "blocks": [seg.first, seg.last],
                "exit": {"kind": "final" if last else "trained",
                         "point": f"after block {seg.last}",
                         "threshold": None if last else float(thresholds[i]),
                         "confidence": "max_softmax",
                         "outputs": {"token": "int64 (1,) next token", "confidence":
                                     "float32 (1,)", "exit": "bool (1,) confidence > threshold"}},
            })
        manifest: dict[str, Any] = {
            "schema_version": BUNDLE_SCHEMA_VERSION, "kind": "edge-ee-bundle",
            "model": {"name": name, "task": TASK, "granularity": "token",
                      "variant": "early-exit" if exits else "monolithic",
                      "architecture": c.to_dict(), **(extra or {})},
            "input": {"name": "tokens", "shape": [1, None], "dtype": "int64",
                      "layout": "token ids", "normalisation": None},
            "classes": list(pieces),
            "segments": entries,
            "language_model": {"context": c.seq_len, "kv_heads": c.n_kv_heads,
                               "head_dim": c.head_dim, "dim": c.dim, "n_layers": c.n_layers,
                               "exits_after_blocks": list(exits),
                               "default_new_tokens": options.default_new_tokens,
                               "kv_fill": "lazy copy of the exited hidden state (CALM)",
                               "decoding": "greedy"},
            "preferred_format": "onnx",
        }
        ref = TorchSegments(segs)
        shell = _Manifestless(manifest)
        g: dict[str, np.ndarray] = {"prompts": np.asarray(prompts, np.int64)}
        for i, p in enumerate(g["prompts"]):
            for mode, no_exit in (("exit", False), ("full", True)):
                d = decode(shell, ref, p, options.golden_new_tokens, no_exit)  # type: ignore[arg-type]
                g[f"p{i}/{mode}/tokens"] = np.asarray(d.tokens, np.int64)
                g[f"p{i}/{mode}/exits"] = np.asarray(d.exits, np.int64)
        with open(tmp / "golden.npz", "wb") as fh:
            np.savez(fh, **g)
        manifest["golden"] = {"file": "golden.npz", "count": len(g["prompts"]),
                              "new_tokens": options.golden_new_tokens}
        import onnx
        import onnxruntime
        manifest["provenance"] = {
            "edge_ee_version": edge_ee.__version__, "torch_version": torch.__version__,
            "onnx_version": onnx.__version__, "onnx_opset": 20,
            "onnxruntime_version": onnxruntime.__version__,
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        manifest["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())
                             if p.name != MANIFEST}
        validate_manifest_structure(manifest)
        atomic_write_json(tmp / MANIFEST, manifest)
        bundle = load_bundle(tmp)
        try:
            manifest["self_check"] = self_check(bundle, open_backend(bundle))
        except SelfCheckError as err:
            raise ExportValidationError(f"onnxruntime does not reproduce torch's decoding: "
                                        f"{err}") from err
        atomic_write_json(tmp / MANIFEST, manifest)
    return out
