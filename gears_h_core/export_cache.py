"""Traced networks kept on disk (``jax.export``), so a restart skips tracing the model.

JAX's persistent compilation cache saves XLA's compile step, but finding an entry still needs
the StableHLO module, that is, tracing the whole e3nn network once per padding bucket
(seconds each on a CPU). `ExportCache` stores each bucket's traced module as a serialized
`jax.export.Exported` (a flatbuffer, no pickle) under a key that covers everything the trace
depends on: the source of `gears_h_core`, the JAX and jaxlib versions, the backend, the model
configuration, basis and species, the bucket and the shapes of every argument. A later start
deserializes the module and compiles a thin call of it, which the persistent compilation cache
answers. Any error reading an entry falls back to tracing (and rewrites the entry).

Inputs and outputs cross the boundary as flat tuples of arrays, so no custom pytree node has
to be serialized: the caller flattens the arguments and rebuilds the output container.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from gears_h_core.io.atomic_file import write_bytes_atomic

logger = logging.getLogger(__name__)

__all__ = ["ExportCache", "source_fingerprint"]

_SUFFIX = ".jaxexport"


@functools.cache
def source_fingerprint() -> str:
    """sha256 of every Python source file of `gears_h_core` (a code change invalidates)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


class ExportCache:
    """A directory of serialized traced functions, one file per key.

    Args:
        directory: where the ``*.jaxexport`` files live (created on first write).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.hits = 0

    def key(self, parts: Sequence[str], leaves: Sequence[Any]) -> str:
        """Entry name for a function described by ``parts`` applied to ``leaves``."""
        digest = hashlib.sha256()
        for part in (
            source_fingerprint(),
            jax.__version__,
            importlib.metadata.version("jaxlib"),
            jax.default_backend(),
            *parts,
            *(f"{tuple(x.shape)}:{x.dtype}" for x in leaves),
        ):
            digest.update(str(part).encode())
            digest.update(b"\0")
        return digest.hexdigest()[:40]

    def lower(
        self,
        flat_fn: Callable[..., tuple[jax.Array, ...]],
        leaves: Sequence[Any],
        parts: Sequence[str],
    ) -> Any:
        """``jax.jit(flat_fn).lower(*leaves)``, traced at most once per key across processes.

        ``flat_fn`` takes the flat argument arrays and returns a flat tuple of arrays; ``leaves``
        are arrays or `jax.ShapeDtypeStruct` (only shapes and dtypes are used).
        """
        path = self.directory / f"{self.key(parts, leaves)}{_SUFFIX}"
        exported = None
        if path.is_file():
            try:
                exported = jax.export.deserialize(bytearray(path.read_bytes()))
                self.hits += 1
            except Exception as exc:  # a truncated or foreign file: trace again
                logger.warning("ignoring unreadable traced network %s (%s)", path, exc)
        if exported is None:
            specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
            exported = jax.export.export(jax.jit(flat_fn))(*specs)
            try:
                write_bytes_atomic(path, bytes(exported.serialize()))
            except Exception as exc:  # a read-only or full disk: serve anyway, trace next time
                logger.warning("cannot store traced network in %s (%s)", path, exc)
        return jax.jit(exported.call).lower(*leaves)
