"""What pruning leaves behind: the sparsity figure, compressed bundle size, export helper.

* `sparsity_figure`: per-layer sparsity of the simultaneous and sequential schedules and
  their difference (simultaneous − sequential), as a heatmap (layers × [sim, seq, diff])
  beside a bar plot of the difference — the thesis' figure.
* `compressed_size`: bytes of every ONNX file of a bundle, raw and gzip-compressed
  (level 9); zeros from unstructured pruning only pay off after compression.
* `export_pruned`: trained exit heads of a pruned model → calibrated → bundle.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from pathlib import Path

from edge_ee.data import ImageSplit
from edge_ee.exits.trained import EarlyExitModel, calibrate_heads, to_exit_heads


def short_layer_name(name: str) -> str:
    return (name.replace("net.stages.", "s").replace("net.classifier.", "final.")
            .replace("exits.", "exit").replace(".linear", ".fc"))


def sparsity_figure(simultaneous: Mapping[str, float], sequential: Mapping[str, float],
                    path: str | Path, title: str = "") -> Path:
    """Heatmap of per-layer sparsity (sim, seq, sim − seq) and a bar plot of the difference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [n for n in simultaneous if n in sequential]
    sim = np.array([simultaneous[n] for n in names])
    seq = np.array([sequential[n] for n in names])
    diff = sim - seq
    labels = [short_layer_name(n) for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, max(4.0, 0.22 * len(names) + 1.5)),
                                   gridspec_kw={"width_ratios": [1.2, 1.0]})
    im = ax1.imshow(np.stack([sim, seq], 1), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax1.set_xticks([0, 1], ["simultaneous", "sequential"])
    ax1.set_yticks(range(len(names)), labels, fontsize=7)
    fig.colorbar(im, ax=ax1, label="sparsity (fraction of weights removed)")
    colors = ["tab:blue" if d >= 0 else "tab:red" for d in diff]
    ax2.barh(range(len(names)), diff, color=colors)
    ax2.set_yticks(range(len(names)), labels, fontsize=7)
    ax2.invert_yaxis()
    ax1.set_ylim(len(names) - 0.5, -0.5)
    ax2.axvline(0, color="k", lw=0.8)
    ax2.set_xlabel("sparsity difference: simultaneous − sequential")
    fig.suptitle(title or "per-layer sparsity")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def compressed_size(bundle: str | Path) -> dict[str, int]:
    """Raw and gzip-9 bytes of all ONNX files in a bundle."""
    raw = gz = 0
    for f in sorted(Path(bundle).glob("*.onnx")):
        data = f.read_bytes()
        raw += len(data)
        gz += len(gzip.compress(data, compresslevel=9, mtime=0))
    return {"onnx_bytes": raw, "onnx_gzip_bytes": gz}


def export_pruned(model: EarlyExitModel, calib: ImageSplit, test: ImageSplit, out: str | Path,
                  name: str, confidence: str = "max_softmax", max_drop: float = 0.01,
                  overwrite: bool = False, extra: dict | None = None) -> tuple[Path, dict]:
    """Calibrate the (pruned) model's trained exits on `calib` and export a bundle."""
    import numpy as np

    from edge_ee.pipeline import evaluate_split, export

    heads = to_exit_heads(model, confidence)
    fitted = calibrate_heads(model.net, heads, calib, max_drop)
    table = evaluate_split(model.net, heads, test, fitted.costs, progress=False)
    on_test = table.evaluate(np.asarray(fitted.chosen.thresholds))
    record = {"split": "calibration split given to export_pruned", "max_drop": max_drop,
              "point": fitted.chosen.to_json(), "test_point": on_test.to_json(),
              "full_flops": fitted.costs.full_flops,
              "test_expected_flops": on_test.cost_fraction * fitted.costs.full_flops,
              "full_accuracy": {"calibration": fitted.calib.full_accuracy,
                                "test": table.full_accuracy}, **(extra or {})}
    path = export(model.net, heads, out, test, name, record, overwrite=overwrite)
    return path, record
