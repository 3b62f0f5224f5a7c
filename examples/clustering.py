"""E2CM without labels: deep embedding clustering on Fashion-MNIST with early exits.

    python examples/clustering.py --data ../shared/data --out edge-ee-out/clusters [--quick]

The shipped autoencoder embeds the images; k-means on the final embedding gives the
clusters; every earlier exit gets class means under those pseudo-labels (no true labels
anywhere in fitting or calibration); thresholds keep ≥ 99 % agreement with the final
assignment. The bundle runs on the device runner; true labels are used only to score.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_ee.clustering.build import build_cluster_bundle
from edge_ee.clustering.config import ClusterConfig
from edge_ee.exits import ExitSpec
from edge_ee.pipeline import FitConfig

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--out", default="edge-ee-out/clusters")
    ap.add_argument("--quick", action="store_true", help="small subsets (CI)")
    a = ap.parse_args()
    cfg = ClusterConfig(out=a.out, data=str(Path(a.data) / "fashion-mnist"),
                        fit_samples=4000 if a.quick else None, kmeans_inits=3 if a.quick else 10,
                        fit=FitConfig(exit_spec=ExitSpec.parse("lda:2")),
                        runner_samples=200 if a.quick else 2000, overwrite=True)
    s = build_cluster_bundle(cfg, progress=False)
    full, chosen, d = (s["clustering"]["test_full"], s["clustering"]["test_chosen"],
                       s["device"])
    print(f"test split: full network accuracy {full['clustering_accuracy']:.4f} NMI "
          f"{full['nmi']:.4f}; with exits accuracy {chosen['clustering_accuracy']:.4f} NMI "
          f"{chosen['nmi']:.4f} at {chosen['cost_fraction']:.3f} of the FLOPs")
    print(f"device runner on {d['samples']} test images: accuracy {d['clustering_accuracy']:.4f}, "
          f"{d['cost_fraction']:.3f} of the FLOPs; bundle {s['bundle']}")


if __name__ == "__main__":
    main()
