"""EEPrune: dataset pruning with an early-exit network, and the baselines it is compared with.

* `scorers`: the scorer interface and registry (`eeprune`, `random`, `el2n`, `forgetting`).
* `keepfile`: the keep file (kept/discarded indices, scores, provenance, data sha256) and
  its `Subset` / `Sampler` helpers for training code.
* `harness`: train fresh models on kept sets, the D_p check, the exit-location ablation,
  scorer cost; `report`: tables, heatmap, accuracy-versus-ratio plot.
"""

from edge_ee.dataprune.keepfile import (
    KeepFile,
    KeepFileError,
    dataset_sha256,
    read_keep_file,
    write_keep_file,
)
from edge_ee.dataprune.scorers import SCORERS, ScoreBudget, Scorer, get_scorer, keep_indices

__all__ = ["SCORERS", "KeepFile", "KeepFileError", "ScoreBudget", "Scorer", "dataset_sha256",
           "get_scorer", "keep_indices", "read_keep_file", "write_keep_file"]
