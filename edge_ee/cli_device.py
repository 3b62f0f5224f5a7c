"""Device-facing host subcommands: `edge-ee pack-runner`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    p = sub.add_parser("pack-runner", help="build a single-file edge-ee-run.pyz for devices")
    p.add_argument("--out", type=Path, default=Path("edge-ee-run.pyz"))
    return {"pack-runner": cmd_pack_runner}


def cmd_pack_runner(a: argparse.Namespace) -> int:
    from edge_ee.pack import pack_runner
    path = pack_runner(a.out)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB); on the device: "
          f"python3 {path.name} BUNDLE --input samples.npz --out results.json")
    return 0
