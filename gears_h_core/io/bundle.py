"""Model bundle: the only thing that passes from training to serving (SPEC §6).

A bundle is a directory::

    manifest.json        format_version, name, version, created_at, model config, basis,
                         species, cutoffs, bucket ladder, training provenance, metrics and the
                         sha256 of every other file
    params.msgpack       network parameters: {"path/to/leaf": array} in the wire array encoding
    statistics.msgpack   scale/shift/cutoff arrays, same encoding

No pickle: arrays are ``{"dtype", "shape", "data"}`` maps (`gears_h_core.io.wire`). Loading
checks the format version, that every listed file exists and that its sha256 matches, and
refuses partial or tampered bundles with a `BundleError` naming the file. Bundles are written
to a temporary sibling directory and renamed into place (atomic).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from gears_h_core import __version__
from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.graph.neighbors import pair_cutoff_from_json, pair_cutoff_to_json
from gears_h_core.io.wire import WireError, decode_array, encode_array
from gears_h_core.model.config import ModelConfig

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARAMS = "params.msgpack"
STATISTICS = "statistics.msgpack"
_MAX_FILE_BYTES = 2 * 1024**3


class BundleError(ValueError):
    """A bundle that cannot be loaded (missing file, bad hash, unknown format version)."""


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """A loaded (or to-be-written) model bundle.

    Attributes:
        name: model name (served as ``/v2/models/{name}``).
        config: network architecture.
        basis: orbital shells of every species the model knows.
        species: atomic numbers, sorted (species index = position).
        pair_cutoff: hopping cutoff per unordered species pair (Å); absent pairs have no
            hopping blocks.
        params: flat mapping "module/.../leaf" -> float32 array.
        statistics: flat mapping name -> array (see `gears_h_core.model.scale_shift`).
        ladder: bucket ladder parameters (`BucketLadder.to_dict`).
        metadata: provenance (training data fingerprint, metrics, ...).
        sha256: digest of the parameter file (set when loaded or written).
    """

    name: str
    config: ModelConfig
    basis: OrbitalBasis
    species: tuple[int, ...]
    pair_cutoff: dict[tuple[int, int], float]
    params: dict[str, np.ndarray]
    statistics: dict[str, np.ndarray]
    ladder: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    version: str = __version__
    created_at: str = ""
    sha256: str = ""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    doc = {k: encode_array(np.asarray(arrays[k]), path=k) for k in sorted(arrays)}
    return msgpack.packb(doc, use_bin_type=True)


def _unpack_arrays(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    try:
        doc = msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_bin_len=len(data), max_str_len=len(data)
        )
    except Exception as exc:
        raise BundleError(f"{path}: not a valid array file ({exc})") from exc
    if not isinstance(doc, dict):
        raise BundleError(f"{path}: expected a map of arrays")
    try:
        return {k: decode_array(v, path=f"{path.name}:{k}") for k, v in doc.items()}
    except WireError as exc:
        raise BundleError(f"{path}: {exc}") from exc


def save_bundle(bundle: ModelBundle, path: str | Path) -> Path:
    """Write ``bundle`` to directory ``path`` atomically (replacing an existing bundle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    try:
        (tmp / PARAMS).write_bytes(_pack_arrays(bundle.params))
        (tmp / STATISTICS).write_bytes(_pack_arrays(bundle.statistics))
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": bundle.name,
            "version": bundle.version,
            "package_version": __version__,
            "created_at": bundle.created_at
            or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "model_config": bundle.config.to_dict(),
            "basis": bundle.basis.to_json_dict(),
            "species": list(bundle.species),
            "edge_cutoff": bundle.config.edge_cutoff,
            "pair_cutoff": pair_cutoff_to_json(bundle.pair_cutoff),
            "ladder": bundle.ladder,
            "metadata": bundle.metadata,
            "files": {name: _sha256(tmp / name) for name in (PARAMS, STATISTICS)},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_bundle(path: str | Path) -> ModelBundle:
    """Load and verify a bundle directory."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a model bundle directory")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{path}: partial bundle, {MANIFEST} is missing")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{mpath}: unreadable manifest ({exc})") from exc
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{mpath}: format_version {version!r} is not supported (this build reads {FORMAT_VERSION})"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {PARAMS, STATISTICS}:
        raise BundleError(f"{mpath}: 'files' must list {PARAMS} and {STATISTICS} with sha256")
    for name, digest in files.items():
        f = path / name
        if not f.is_file():
            raise BundleError(f"{path}: partial bundle, {name} is missing")
        if f.stat().st_size > _MAX_FILE_BYTES:
            raise BundleError(f"{f}: larger than {_MAX_FILE_BYTES} bytes")
        actual = _sha256(f)
        if actual != digest:
            raise BundleError(
                f"{f}: sha256 mismatch (manifest {str(digest)[:12]}…, file {actual[:12]}…): "
                "the bundle was modified or is incomplete"
            )
    try:
        config = ModelConfig.from_dict(manifest["model_config"])
        pair_cutoff = pair_cutoff_from_json(manifest["pair_cutoff"])
        bundle = ModelBundle(
            name=str(manifest["name"]),
            config=config,
            basis=OrbitalBasis.from_json_dict(manifest["basis"]),
            species=tuple(int(z) for z in manifest["species"]),
            pair_cutoff=pair_cutoff,
            params=_unpack_arrays(path / PARAMS),
            statistics=_unpack_arrays(path / STATISTICS),
            ladder=dict(manifest["ladder"]),
            metadata=dict(manifest.get("metadata", {})),
            version=str(manifest.get("version", "")),
            created_at=str(manifest.get("created_at", "")),
            sha256=files[PARAMS],
        )
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{mpath}: malformed manifest ({type(exc).__name__}: {exc})") from exc
    return bundle
