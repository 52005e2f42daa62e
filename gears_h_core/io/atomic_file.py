"""Atomic file writes: a temporary sibling, then a rename (readers never see half a file).

The temporary name is unique per call (process id and a random suffix), so concurrent
writers of the same path (two servers sharing a cache, say) never write into each other's
temporary file; the last rename wins. Permissions are the ordinary ones (umask applies).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["write_bytes_atomic"]


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (parent folders are created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
