"""Read ``.npz`` archives whose members may be pickled numpy object arrays, safely.

The block files of a snapshot folder (``hblocks_*.npz``, ``sblocks_*.npz``) hold numpy
*object* arrays, which numpy stores as a pickle. ``np.load(..., allow_pickle=True)`` would
execute whatever callable such a pickle names. Here object members go through
`RestrictedUnpickler`, whose ``find_class`` admits only the handful of globals that numpy
array reconstruction needs (traced on every shipped file):

* ``numpy._core.multiarray._reconstruct`` (numpy ≥ 2 writers) and
  ``numpy.core.multiarray._reconstruct`` (numpy 1 writers, e.g. the WSe2 example),
  wrapped so that it only ever builds a plain ``numpy.ndarray``;
* ``numpy._core.multiarray.scalar`` / ``numpy.core.multiarray.scalar`` (numpy scalars
  inside object arrays);
* ``numpy.ndarray`` and ``numpy.dtype``.

Anything else raises `UnsafePickleError` naming the file, the member key and the refused
global, before it is called. Plain (non-object) members are read with
``numpy.lib.format.read_array(..., allow_pickle=False)``, i.e. what
``np.load(allow_pickle=False)`` does.

Size limits: every member's declared uncompressed size is checked against
``max_member_bytes`` (default 2 GiB) and the sum against ``max_total_bytes`` before any byte
is decompressed; `zipfile` never inflates beyond the declared size, so a zip bomb cannot
expand past the cap.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
from numpy._core import multiarray as _multiarray

__all__ = [
    "DEFAULT_MAX_MEMBER_BYTES",
    "DEFAULT_MAX_TOTAL_BYTES",
    "NpzError",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "load_npz",
    "load_npz_bytes",
]

DEFAULT_MAX_MEMBER_BYTES = 2 * 1024**3  # 2 GiB uncompressed per member
DEFAULT_MAX_TOTAL_BYTES = 8 * 1024**3  # 8 GiB uncompressed per archive
_MAX_HEADER_SIZE = 10_000  # numpy's own default limit for .npy headers


class NpzError(ValueError):
    """A ``.npz`` archive that cannot be read (corrupt, too large, not an archive)."""


class UnsafePickleError(NpzError):
    """A pickled member names a global outside the numpy-reconstruction allow-list."""


def _reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    """`numpy._core.multiarray._reconstruct` restricted to ``cls is numpy.ndarray``."""
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"_reconstruct called with class {cls!r}")
    return cast(np.ndarray, _multiarray._reconstruct(cls, shape, dtype))


_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy array reconstruction needs.

    ``persistent_load`` is not overridden, so persistent ids are refused by `pickle`.
    """

    def __init__(self, file: IO[bytes], *, source: str, key: str) -> None:
        super().__init__(file)
        self._source = source
        self._key = key

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: member {self._key!r}: refused pickled global "
                f"{module}.{name} (only numpy array reconstruction is allowed)"
            ) from None


def _read_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh, max_header_size=_MAX_HEADER_SIZE)
    if version in ((2, 0), (3, 0)):
        # 3.0 only differs by allowing utf-8 in the header (field names), same layout.
        return np.lib.format.read_array_header_2_0(fh, max_header_size=_MAX_HEADER_SIZE)
    raise ValueError(f"unsupported .npy format version {version}")


def _load_object_member(
    fh: IO[bytes], shape: tuple[int, ...], *, source: str, key: str
) -> np.ndarray:
    """Unpickle an object member whose header (``shape``) has already been read."""
    array = RestrictedUnpickler(fh, source=source, key=key).load()
    if not isinstance(array, np.ndarray):
        raise NpzError(
            f"{source}: member {key!r}: pickle holds {type(array).__name__}, not an array"
        )
    if array.shape != tuple(shape):
        raise NpzError(
            f"{source}: member {key!r}: header shape {tuple(shape)} but pickle holds {array.shape}"
        )
    return array


def load_npz(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    name: str | None = None,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> dict[str, np.ndarray]:
    """Read every member of a ``.npz`` archive into a dict ``key -> array``.

    Args:
        source: path of the archive, or a binary file object (e.g. ``io.BytesIO`` of bytes
            already read, so a caller can hash and parse one read).
        name: how to name the archive in error messages (default: the path).
        max_member_bytes: largest declared uncompressed size of one member.
        max_total_bytes: largest declared uncompressed size of all members together.

    Returns:
        ``{key: array}`` with the ``.npy`` suffix stripped from member names. Object members
        come back as numpy object arrays (elements as pickled, e.g. float32 ndarrays).

    Raises:
        UnsafePickleError: a pickled member names a global outside the allow-list.
        NpzError: the file is not a zip archive, a member is too large or malformed.
    """
    label = name if name is not None else (str(source) if not hasattr(source, "read") else "<npz>")
    if isinstance(source, str | os.PathLike):
        source = Path(source)
    try:
        archive = zipfile.ZipFile(source)  # type: ignore[arg-type]
    except (OSError, zipfile.BadZipFile) as exc:
        raise NpzError(f"{label}: not a readable .npz archive ({exc})") from exc
    out: dict[str, np.ndarray] = {}
    with archive:
        infos = archive.infolist()
        total = 0
        for info in infos:
            if info.file_size > max_member_bytes:
                raise NpzError(
                    f"{label}: member {info.filename!r} declares {info.file_size} bytes "
                    f"uncompressed, over the limit of {max_member_bytes}"
                )
            total += info.file_size
        if total > max_total_bytes:
            raise NpzError(
                f"{label}: members declare {total} bytes uncompressed, over the limit of "
                f"{max_total_bytes}"
            )
        for info in infos:
            key = info.filename.removesuffix(".npy")
            try:
                with archive.open(info) as fh:
                    shape, _, dtype = _read_header(fh)
                    if dtype.hasobject:
                        out[key] = _load_object_member(fh, tuple(shape), source=label, key=key)
                        continue
                # numpy allocates the whole array from the header before reading: the
                # header must not promise more data than the member holds.
                data_bytes = math.prod(int(d) for d in shape) * dtype.itemsize
                if data_bytes > info.file_size:
                    raise NpzError(
                        f"{label}: member {key!r}: header declares {tuple(shape)} {dtype} "
                        f"({data_bytes} bytes) but the member holds {info.file_size} bytes"
                    )
                with archive.open(info) as fh:
                    out[key] = np.lib.format.read_array(
                        fh, allow_pickle=False, max_header_size=_MAX_HEADER_SIZE
                    )
            except NpzError:
                raise
            except (
                OSError,
                ValueError,
                EOFError,
                zipfile.BadZipFile,
                pickle.UnpicklingError,
                TypeError,
                AttributeError,
                IndexError,
                KeyError,
                MemoryError,
                OverflowError,
                RecursionError,
            ) as exc:
                raise NpzError(f"{label}: member {key!r} cannot be read: {exc}") from exc
    return out


def load_npz_bytes(data: bytes, *, name: str, **kwargs: Any) -> dict[str, np.ndarray]:
    """`load_npz` on bytes already in memory (``name`` labels errors)."""
    return load_npz(io.BytesIO(data), name=name, **kwargs)
