"""Your own PyTorch model → training-free early exits → a validated bundle → run on the device.

    python examples/own_model.py --data ../shared/data --out edge-ee-out/own-model [--quick]

The model is `examples/user_resnet.py` (a CIFAR ResNet-20 written outside edge-ee) with
the pretrained weights from `../shared/data/resnet-cifar10/resnet20.npz`; swap in your
own `file.py:factory` and data. Steps: load the model, list its cut points, cut at four
points evenly spaced by FLOPs, fit shared-covariance exits in one pass over the training
images, choose thresholds on test images the model never saw with a certified drop
(≤ 2 points with probability ≥ 0.9), export the bundle (validated against torch), and
run it through the torch-free device executor on other test images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from device_runners.backends import open_backend
from device_runners.executor import execute
from device_runners.manifest import load_bundle
from edge_ee import api
from edge_ee.data import load_cifar10_jpeg

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--out", default="edge-ee-out/own-model")
    ap.add_argument("--quick", action="store_true", help="small subsets (CI)")
    a = ap.parse_args()
    data = Path(a.data)
    model, _ = api.load_model(f"{HERE / 'user_resnet.py'}:resnet20",
                              str(data / "resnet-cifar10" / "resnet20.npz"))
    for p in api.cut_points(model, (3, 32, 32), max_depth=2):
        print(f"  cut point {p.name:12s} {p.flops_fraction:6.1%} of the FLOPs, feature {p.shape}")
    net = api.cut(model, "auto:4", (3, 32, 32), "user-resnet20")
    print("exits after", net.exit_names)

    per = 100 if a.quick else None
    train = load_cifar10_jpeg("train", data / "cifar10-jpeg.zip", per_class=per)
    test = load_cifar10_jpeg("test", data / "cifar10-jpeg.zip", per_class=60 if a.quick else None)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(test))
    calib, held = test.subset(np.sort(order[: len(test) // 2])), test.subset(np.sort(order[len(test) // 2:]))
    cfg = api.FitConfig(exit_spec=api.ExitSpec.parse("lda:2"), max_drop=0.02, delta=0.1)
    fitted = api.fit(net, train, cfg, calib_data=calib)
    point = api.evaluate(net, fitted, held)
    print(f"held-out test: accuracy {point.accuracy:.3f} at {point.cost_fraction:.2f} of the "
          f"FLOPs (certified: {fitted.certificate is not None and fitted.certificate.certified})")
    path = api.export_bundle(net, fitted, a.out, held, "user-resnet20", overwrite=True)
    bundle = load_bundle(path)
    out = execute(bundle, open_backend(bundle), held.normalised())
    print(f"device executor on {len(held)} images: accuracy "
          f"{(out.prediction == held.labels).mean():.3f}, exits per segment "
          f"{np.bincount(out.exit, minlength=len(bundle.segments)).tolist()}; bundle {path}")


if __name__ == "__main__":
    main()
