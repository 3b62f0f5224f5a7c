"""`edge-ee inspect`: where your own model can be cut, with the FLOPs spent up to each point.

  edge-ee inspect --model path/to/net.py:make --weights w.pt --input-shape 3,32,32
  edge-ee inspect --model package.module:factory --input-shape 3,224,224 --auto 4

Lists every single-tensor boundary (a valid exit point) with the cumulative FLOPs fraction
and feature shape; `--auto N` prints N cut points evenly spaced by FLOPs, ready for
`--cut`. No torch at import: the handler imports it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from edge_ee import cli_types as ct


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    p = sub.add_parser("inspect", help="list the valid cut points of your own model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="path/to/file.py:factory, "
                   "package.module:factory, or a torch.export program .pt2")
    p.add_argument("--weights", default=None, help="state_dict (.pt via torch.load("
                   "weights_only=True), or .npz) to load into the factory's model")
    p.add_argument("--input-shape", type=ct.int_tuple, required=True,
                   help="one input's shape without the batch axis, e.g. 3,32,32")
    p.add_argument("--max-depth", type=ct.integer(1, 64), default=3,
                   help="look at submodules up to this nesting depth")
    p.add_argument("--auto", type=ct.integer(1, 1000), default=None, metavar="N",
                   help="also print N cut points evenly spaced by FLOPs")
    return {"inspect": cmd_inspect}


def cmd_inspect(a: argparse.Namespace) -> int:
    from edge_ee.inspect import auto_cuts, cut_points
    from edge_ee.models.user import load_user_model
    model, _ = load_user_model(a.model, a.weights)
    points = cut_points(model, a.input_shape, a.max_depth)
    print(f"{'cut point':40s} {'FLOPs so far':>12s}  feature shape")
    for p in points:
        print(f"{p.name:40s} {p.flops_fraction:12.1%}  {p.shape}")
    print(f"{len(points)} valid cut points (single-tensor boundaries)")
    if a.auto:
        print("--cut " + ",".join(auto_cuts(points, a.auto)))
    return 0
