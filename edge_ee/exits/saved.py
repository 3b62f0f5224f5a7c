"""Trained exit heads kept in a file, so later jobs (`edge-ee prune --exits-file`) reuse them.

`save_exits` writes the exit classifiers of an `EarlyExitModel` (exit points, pooling,
state dict) and the sha256 of the backbone weights they were trained on with
`torch.save`, atomically, beside a `.sha256` sidecar; `load_exits` verifies the sidecar,
reads it with `torch.load(weights_only=True)`, refuses exits trained on another backbone
and attaches them to the given network.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from edge_ee.errors import ConfigError, ModelError
from edge_ee.exitnet import ExitNet
from edge_ee.exits.trained import EarlyExitModel, attach_exits
from edge_ee.models.weights import load_into, save_with_sidecar, verify_sidecar

FORMAT = "edge-ee-trained-exits/1"


def save_exits(model: EarlyExitModel, path: str | Path, backbone_sha256: str,
               mode: str = "") -> str:
    """Write the exit heads of `model` to `path` (+ `path.sha256`); returns the file's sha256."""
    pools = {int(i): model.exits[str(i)].pool for i in model.exit_indices}
    if len(set(pools.values())) > 1:
        raise ConfigError(f"exits with different pooling {pools} cannot be saved together")
    state = {"format": FORMAT, "backbone_sha256": backbone_sha256, "mode": mode,
             "exit_indices": list(model.exit_indices), "pool": next(iter(pools.values()), 1),
             "state_dict": {k: v.detach().clone() for k, v in model.exits.state_dict().items()}}
    return save_with_sidecar(state, path)


def load_exits(net: ExitNet, path: str | Path, backbone_sha256: str) -> EarlyExitModel:
    """`net` with the trained exits of `path` attached (checked, then loaded strictly)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"trained exits {p} not found; write them first with "
                          f"`edge-ee train-exits ... --exits-file {p}`")
    verify_sidecar(p, ConfigError)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(f"cannot read trained exits {p} ({err}); write them again with "
                          "`edge-ee train-exits --exits-file`") from err
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ConfigError(f"{p} is not a trained-exits file ({FORMAT}); write one with "
                          "`edge-ee train-exits --exits-file`")
    if obj["backbone_sha256"] != backbone_sha256:
        raise ConfigError(f"{p} holds exits trained on another backbone (sha256 "
                          f"{obj['backbone_sha256'][:12]}…, this model {backbone_sha256[:12]}…); "
                          "train exits for this model with `edge-ee train-exits --exits-file`")
    model = attach_exits(net, [int(i) for i in obj["exit_indices"]], int(obj["pool"]))
    try:
        load_into(model.exits, obj["state_dict"], str(p))
    except ModelError as err:
        raise ConfigError(f"{err} (the exits do not fit this network)") from err
    return model.eval()
