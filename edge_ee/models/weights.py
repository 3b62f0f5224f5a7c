"""Safe weight loading: checksum first, then numpy `.npz` or `torch.load(weights_only=True)`."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from device_runners.manifest import sha256_file
from edge_ee.errors import ModelError


def read_state_dict(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from `.npz` (arrays by key) or `.pt` (tensors), verifying the checksum."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file {p} not found; pass the path of an existing .npz or .pt")
    if expected_sha256 is not None:
        got = sha256_file(p)
        if got != expected_sha256:
            raise ModelError(
                f"{p}: sha256 {got[:16]}… does not match the expected {expected_sha256[:16]}…; "
                "the file is corrupt or not the one this model expects — re-copy it"
            )
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return {k: torch.from_numpy(np.array(z[k])) for k in z.files}
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (OSError, ValueError, zipfile.BadZipFile, RuntimeError, EOFError) as err:
        raise ModelError(f"cannot read weights {p}: {err}; the file is truncated or corrupt") from err
    if not isinstance(obj, dict):
        raise ModelError(f"{p} does not hold a state_dict (found {type(obj).__name__})")
    return obj


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with a message that lists missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    own = {k: v for k, v in own.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own) - {k for k in state if k.endswith("num_batches_tracked")})
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:5]}{'…' if len(extra) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:3]}")
        raise ModelError(f"{source} does not fit the architecture: {'; '.join(parts)}; "
                         "check the depth/architecture matches the weights")
    model.load_state_dict({k: state[k].to(v.dtype) for k, v in own.items()}, strict=False)
