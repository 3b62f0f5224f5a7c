"""The user's own model: a factory in a file or module, its weights, or a `torch.export` program.

* `path/to/file.py:factory` or `package.module:factory` — a callable returning an
  `nn.Module` (called with no arguments); `--weights state_dict.pt|.npz` is loaded with
  `torch.load(..., weights_only=True)` and a strict key check that lists missing and
  unexpected keys.
* `program.pt2` — a `torch.export` program (`torch.export.save`), turned back into a
  module with `.module()`.

Everything wrong is a `ModelError` that says how to fix it, raised before any pass over
data starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_ee.errors import EdgeEEError, ModelError
from edge_ee.models.weights import load_into, read_state_dict, sha256_file


def import_factory(spec: str, flag: str = "--model",
                   error: type[EdgeEEError] = ModelError) -> Callable[..., Any]:
    """The callable named by `path/to/file.py:factory` or `package.module:factory`."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise error(f"{flag} {spec!r}: write path/to/file.py:factory or package.module:factory")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise error(f"{flag} {spec!r}: {path} does not exist")
        name = f"edge_ee_user_{abs(hash(path.resolve()))}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise error(f"{flag} {spec!r}: cannot import {path}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as err:  # the user's code may raise anything
            raise error(f"{flag} {spec!r}: importing {path} failed: {err!r}") from err
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise error(f"{flag} {spec!r}: cannot import module {target!r} ({err}); "
                        "check PYTHONPATH or pass a .py file path") from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise error(f"{flag} {spec!r}: {target} has no callable {attr!r}")
    return factory


def load_user_model(spec: str, weights: str | None = None) -> tuple[nn.Module, str]:
    """(model in eval mode, sha256 of what defines it: the weights or program file)."""
    if spec.endswith(".pt2"):
        path = Path(spec)
        if not path.is_file():
            raise ModelError(f"--model {spec}: no such torch.export program file")
        try:
            model = torch.export.load(str(path)).module()
        except Exception as err:  # torch raises several kinds on a bad archive
            raise ModelError(f"--model {spec}: not a torch.export program ({err}); save one "
                             "with torch.export.save(torch.export.export(model, args), path)") from err
        return model, sha256_file(path)
    factory = import_factory(spec)
    try:
        model = factory()
    except Exception as err:  # the user's factory may raise anything
        raise ModelError(f"--model {spec!r}: the factory raised {err!r}") from err
    if not isinstance(model, nn.Module):
        raise ModelError(f"--model {spec!r}: the factory returned {type(model).__name__}, "
                         "not a torch.nn.Module")
    source = spec
    if weights is not None:
        load_into(model, read_state_dict(weights), weights)
        source = sha256_file(weights)
    return model.eval(), source
