"""The one runtime interface: `Backend.run(graph, feeds) -> outputs`, both dicts of arrays.

A backend opens every graph of a bundle in one file format when it is created: the
segments (keyed by their index) and the bundle's extra graphs (keyed by name, e.g. the
segmentation `assemble` graph). `run` takes the named inputs the manifest lists and
returns the named outputs in the manifest's order, as numpy arrays, so the executor
never knows which runtime it drives. Backends register themselves by name with
`register_backend`; `device_runners.backends.open_backend` picks one for a bundle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from device_runners.errors import BackendError
from device_runners.manifest import Bundle

Feeds = Mapping[str, np.ndarray]
GraphKey = int | str  # a segment index, or the name of an extra graph

BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make a backend selectable by its `name` (`--backend NAME`)."""
    if not cls.name or not cls.file_format:
        raise TypeError(f"{cls.__name__} must set `name` and `file_format`")
    BACKENDS[cls.name] = cls
    return cls


class Backend:
    """Interface: `run(graph, feeds) -> {output name: array}` for one bundle and format."""

    name: ClassVar[str] = ""
    file_format: ClassVar[str] = ""

    def __init__(self, bundle: Bundle, threads: int = 1) -> None:
        if threads < 1:
            raise BackendError(f"threads must be >= 1, got {threads}; pass --threads 1 or more")
        self.bundle = bundle
        self.threads = threads

    def run(self, graph: GraphKey, feeds: Feeds | np.ndarray) -> dict[str, np.ndarray]:
        """Run one graph. `feeds` maps input names to arrays; a bare array is accepted for a
        graph with a single input."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def graph_io(self, graph: GraphKey) -> tuple[list[str], list[str]]:
        """(input names, output names) of a graph, as the manifest lists them."""
        entry = self.bundle.graph_entry(graph)
        return list(entry["inputs"]), list(entry["outputs"])

    def _feeds(self, graph: GraphKey, feeds: Feeds | np.ndarray) -> dict[str, np.ndarray]:
        names, _ = self.graph_io(graph)
        if isinstance(feeds, np.ndarray):
            if len(names) != 1:
                raise BackendError(f"graph {graph!r} takes inputs {names}; pass a dict of them")
            return {names[0]: feeds}
        missing = [n for n in names if n not in feeds]
        if missing:
            raise BackendError(f"graph {graph!r} needs inputs {missing} (it takes {names})")
        return {n: feeds[n] for n in names}
