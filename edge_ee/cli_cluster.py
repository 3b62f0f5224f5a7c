"""`edge-ee cluster`: deep embedding clustering with training-free early exits (no labels).

  edge-ee cluster --out fashion-clusters                      # shipped autoencoder, K=10
  edge-ee cluster --out fashion-clusters --exit e2cm:2:margin --runner-samples 1000
  edge-ee cluster --encoder resnet-cifar --fit-samples 20000 --out cifar-clusters
  edge-ee-run fashion-clusters/bundle --input samples.npz --out results.json

k-means clusters the final embedding; earlier exits get cluster means under the final
assignments and thresholds chosen on agreement with them (`--max-drop` = the agreement
that may be lost). Labels in the data are ignored; the test split's labels only score
the result (clustering accuracy with Hungarian matching, NMI). Every flag maps 1:1 to a
field of `edge_ee.clustering.config.ClusterConfig` (exit and search flags to its `fit`,
a `FitConfig`, exactly as in `edge-ee build`). No torch at import.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    from edge_ee.cli import _fit_args
    p = sub.add_parser("cluster", help="k-means on an encoder's embedding + E2CM-style exits "
                                       "fitted on the cluster assignments → bundle")
    p.add_argument("--out", required=True, help="folder for bundle/, summary.json and runs")
    p.add_argument("--encoder", default="fashion-ae",
                   help="fashion-ae (shipped autoencoder, Fashion-MNIST) or resnet-cifar "
                        "(pretrained CIFAR ResNet features, CIFAR-10 JPEG zip)")
    p.add_argument("--data", default=None, help="Fashion-MNIST folder or CIFAR-10 JPEG zip")
    p.add_argument("--weights", default=None,
                   help="encoder weights (.pt with .sha256 beside it, or resnetN.npz)")
    p.add_argument("--train-epochs", type=int, default=0,
                   help="fashion-ae: train the autoencoder now for N epochs (0: shipped weights)")
    p.add_argument("--clusters", type=int, default=10, help="K for k-means (≥ 2)")
    p.add_argument("--fit-samples", type=int, default=None,
                   help="fit on this many random training samples (default: all)")
    p.add_argument("--kmeans-inits", type=int, default=10, help="k-means restarts (n_init)")
    p.add_argument("--max-cluster-share", type=float, default=0.9,
                   help="refuse the embedding as collapsed when one cluster holds more than "
                        "this share of the samples")
    p.add_argument("--runner-samples", type=int, default=0,
                   help="also run the bundle with edge-ee-run on N class-balanced test images "
                        "and score it (0: no run)")
    p.add_argument("--threads", type=int, default=1, help="runtime threads for that run")
    p.add_argument("--name", default=None, help="model name in the manifest")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    _fit_args(p)
    return {"cluster": cmd_cluster}


def cmd_cluster(a: argparse.Namespace) -> int:
    from edge_ee.cli import _fit_config
    from edge_ee.clustering.build import build_cluster_bundle
    from edge_ee.clustering.config import ClusterConfig

    cfg = ClusterConfig(out=a.out, encoder=a.encoder, data=a.data, weights=a.weights,
                        train_epochs=a.train_epochs, clusters=a.clusters,
                        fit_samples=a.fit_samples, kmeans_inits=a.kmeans_inits,
                        max_cluster_share=a.max_cluster_share, fit=_fit_config(a),
                        runner_samples=a.runner_samples, threads=a.threads, name=a.name,
                        overwrite=a.overwrite)
    print("note: labels in the data are ignored for k-means, exit statistics and thresholds; "
          "the test split's labels are used only to score", file=sys.stderr)
    s = build_cluster_bundle(cfg)
    c = s["clustering"]
    print(f"wrote {s['bundle']}: K={c['clusters']} clusters of {c['encoder']} embeddings "
          f"(features trained with: {c['features_trained_with']})")
    rows = [("full network", c["test_full"]), ("early exit", c["test_chosen"])]
    if s.get("device"):
        rows.append(("early exit, edge-ee-run", s["device"]))
    print(f"{'test split':<26}{'cost':>8}{'cluster acc':>13}{'NMI':>8}")
    for name, r in rows:
        acc, nmi = r.get("clustering_accuracy"), r.get("nmi")
        print(f"{name:<26}{r['cost_fraction']:>8.3f}"
              f"{'' if acc is None else f'{acc:>13.4f}'}{'' if nmi is None else f'{nmi:>8.4f}'}")
    return 0
