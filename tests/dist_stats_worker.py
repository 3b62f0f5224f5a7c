"""Worker for tests/test_distributed.py: one statistics pass under torchrun; rank 0 saves it.

    torchrun --nproc-per-node 2 tests/dist_stats_worker.py DATA_DIR OUT.npz
"""

from __future__ import annotations

import sys

import numpy as np
import torch


def stats_arrays(data_dir: str) -> dict[str, np.ndarray]:
    from edge_ee import distributed
    from edge_ee.data import load_fashion_mnist
    from edge_ee.exitnet import from_sequential
    from edge_ee.exits import ExitSpec
    from edge_ee.exits.fit import fit_statistics
    from edge_ee.models.small_cnn import load_small_cnn
    distributed.init_from_env("cpu")
    torch.set_num_threads(1)
    train = load_fashion_mnist("train", data_dir)
    rng = np.random.default_rng(0)
    train = train.subset(np.sort(rng.choice(len(train), 701, replace=False)))  # odd: uneven shards
    net = from_sequential(load_small_cnn(), [0, 1, 2, 3, 4], (1, 28, 28), "fashion-cnn")
    variant = [ExitSpec(), None, ExitSpec(kind="lda", pool=2), None, None]
    (stats,) = fit_statistics(net, [variant], train, batch_size=64, progress=False)
    return {f"{i}/{k}": getattr(s, k).numpy() for i, s in enumerate(stats) if s is not None
            for k in ("sums", "counts", "sq_norm_sum") + (("scatter",) if s.scatter is not None else ())}


if __name__ == "__main__":
    from edge_ee import distributed
    arrays = stats_arrays(sys.argv[1])
    if distributed.rank() == 0:
        np.savez(sys.argv[2], world=distributed.world_size(), **arrays)
    distributed.shutdown()
