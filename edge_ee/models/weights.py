"""Safe weight loading: checksum first, then numpy `.npz` or `torch.load(weights_only=True)`.

Shipped weights carry their sha256 in a sidecar file `<weights>.sha256`: `save_with_sidecar`
writes both atomically, `sidecar_digest` reads the digest (a missing sidecar is an error,
never a skipped check) and `verify_sidecar` checks the file against it before it is loaded.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from device_runners.files import atomic_path, atomic_write_text
from device_runners.manifest import sha256_file
from edge_ee.errors import EdgeEEError, ModelError


def sidecar_digest(path: str | Path, error: type[EdgeEEError] = ModelError) -> str:
    """The digest in `<path>.sha256`; raises `error` when it is missing or empty."""
    side = Path(f"{path}.sha256")
    words = side.read_text().split() if side.is_file() else []
    if not words:
        raise error(f"{side} is missing or empty, so {Path(path).name} cannot be verified; "
                    "reinstall edge-ee, retrain the weights, or write their sha256 there")
    return words[0]


def verify_sidecar(path: str | Path, error: type[EdgeEEError] = ModelError) -> str:
    """Check `path` against its sidecar digest before anything loads it; returns the digest."""
    p = Path(path)
    if not p.is_file():
        raise error(f"weights {p} not found; pass an existing file or retrain them")
    want, got = sidecar_digest(p, error), sha256_file(p)
    if got != want:
        raise error(f"{p}: sha256 {got[:16]}… does not match {p.name}.sha256 ({want[:16]}…); the "
                    "file is corrupt or replaced — re-copy or retrain it")
    return want


def save_with_sidecar(obj: object, path: str | Path) -> str:
    """`torch.save(obj)` and `<path>.sha256`, each through a temporary file and a rename;
    returns the digest."""
    p = Path(path)
    with atomic_path(p) as tmp:
        torch.save(obj, tmp)
    digest = sha256_file(p)
    atomic_write_text(f"{p}.sha256", digest + "\n")
    return digest


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
