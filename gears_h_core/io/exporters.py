"""Write predictions: the wire format (``.msgpack``), a snapshot folder, CSR per shift (``.npz``).

All three are pickle-free and written atomically (temporary sibling + rename):

* ``.msgpack`` — the SPEC §7 response document, byte-identical to what ``POST /infer``
  returns for the same model and structures (``timing`` is nil: nothing was queued);
* snapshot folder — the training-data layout (``shared/data/README.md`` §2) so that the
  data reader and ``gears_h evaluate`` read predictions like DFT data. The block files
  carry ``hblocks_flat`` / ``sblocks_flat`` (every block's float32 elements in C order,
  concatenated; shapes from ``orbital_ells.json``) instead of pickled object arrays;
* ``.npz`` — one scipy CSR matrix per lattice shift for H (and S): keys ``shifts``
  ``[n_shifts, 3]``, ``orbital_offsets`` ``[n_atoms + 1]``, ``numbers``, ``cell``,
  ``pbc``, and ``{H,S}_{k}_{data,indices,indptr}`` for shift ``k`` (``shape`` N × N).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gears_h_core.assemble.blocks import block_matrix_rows, onsite_blocks
from gears_h_core.assemble.sparse import to_csr_per_shift
from gears_h_core.io.atomic_file import write_bytes_atomic
from gears_h_core.io.wire import ModelInfo, encode_response, encode_result
from gears_h_core.types import BlockMatrix, SparseHamiltonian

OUTPUT_KINDS = ("msgpack", "folder", "npz")


def output_kind(path: str | os.PathLike[str]) -> str:
    """``msgpack`` / ``npz`` by suffix; anything else is a folder (of snapshot folders)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".msgpack":
        return "msgpack"
    if suffix == ".npz":
        return "npz"
    return "folder"


def write_msgpack(
    results: Sequence[SparseHamiltonian], model: ModelInfo, path: str | os.PathLike[str]
) -> Path:
    """The wire response of ``results`` (one document, a result per structure)."""
    out = Path(path)
    write_bytes_atomic(out, encode_response([encode_result(sh, model) for sh in results]))
    return out


def _flat(blocks: Sequence[np.ndarray]) -> np.ndarray:
    if not blocks:
        return np.zeros(0, np.float32)
    return np.concatenate([np.asarray(b, np.float32).reshape(-1) for b in blocks])


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # plain numeric arrays: no pickle
    return buf.getvalue()


def _operator_files(prefix: str, bm: BlockMatrix, n_atoms: int) -> dict[str, bytes]:
    _, _, _, hop = block_matrix_rows(bm)
    return {
        f"{prefix}blocks_on-diagonal.npz": _npz_bytes(
            **{f"{prefix}blocks_flat": _flat(onsite_blocks(bm, n_atoms))}
        ),
        f"{prefix}blocks_off-diagonal.npz": _npz_bytes(**{f"{prefix}blocks_flat": _flat(hop)}),
    }


def snapshot_files(sh: SparseHamiltonian, meta: dict[str, Any]) -> dict[str, bytes]:
    """The files of one snapshot folder for ``sh`` (name -> bytes)."""
    import ase.io

    st = sh.structure
    i, j, shift, _ = block_matrix_rows(sh.H)
    # D = r_j + T - r_i with T = shift · cell
    D = st.positions[j] + shift.astype(np.float64) @ st.cell - st.positions[i]
    text = io.StringIO()
    ase.io.write(text, st.to_ase(), format="extxyz")
    basis = sh.basis.restricted_to(st.species)
    files = {
        "atoms.extxyz": text.getvalue().encode(),
        "orbital_ells.json": json.dumps(
            {str(z): list(ells) for z, ells in basis.shells.items()}
        ).encode(),
        "ijD.npz": _npz_bytes(ij=np.stack([i, j], 1).astype(np.int64), D=D.astype(np.float64)),
        **_operator_files("h", sh.H, st.n_atoms),
    }
    if sh.S is not None:
        s_i, s_j, s_shift, _ = block_matrix_rows(sh.S)
        if not (
            np.array_equal(s_i, i) and np.array_equal(s_j, j) and np.array_equal(s_shift, shift)
        ):
            raise ValueError("H and S have different hopping rows; cannot share ijD.npz")
        files.update(_operator_files("s", sh.S, st.n_atoms))
    files["meta.json"] = (json.dumps(meta, indent=1) + "\n").encode()
    return files


def write_folder_atomic(root: Path, name: str, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` (name -> bytes) as the folder ``root/name``: into a temporary sibling
    first, renamed into place at the end (an existing folder of that name is replaced), so a
    crash leaves no partial folder under ``name``."""
    target = root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        for fname, data in files.items():
            (tmp / fname).write_bytes(data)
        os.chmod(tmp, 0o755)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def write_snapshot_folders(
    results: Sequence[SparseHamiltonian],
    model: ModelInfo,
    path: str | os.PathLike[str],
    names: Sequence[str] | None = None,
) -> list[Path]:
    """One snapshot folder per result under ``path`` (``{name}`` or ``structure_{k:04d}``)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for k, sh in enumerate(results):
        name = names[k] if names is not None else f"structure_{k:04d}"
        meta = {
            "code": "gears_h",
            "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
            "units": {"H": "eV", "S": "1", "positions": "Angstrom"},
            "orbital_order": "GPAW real harmonics, m = -l..l, p = (y, z, x)",
            "n_atoms": sh.structure.n_atoms,
            "n_basis": int(sh.basis.orbital_offsets(sh.structure.numbers)[-1]),
        }
        out.append(write_folder_atomic(root, name, snapshot_files(sh, meta)))
    return out


def csr_arrays(sh: SparseHamiltonian) -> dict[str, np.ndarray]:
    """The arrays of the CSR ``.npz`` of one structure (see the module docstring)."""
    st = sh.structure
    offsets = sh.basis.restricted_to(st.species).orbital_offsets(st.numbers)
    ops = {"H": sh.H} if sh.S is None else {"H": sh.H, "S": sh.S}
    per_op = {
        name: to_csr_per_shift(bm, sh.basis, st.numbers, dtype=np.float32)
        for name, bm in ops.items()
    }
    shifts = sorted(set().union(*(set(m) for m in per_op.values())))
    arrays: dict[str, np.ndarray] = {
        "shifts": np.asarray(shifts, dtype=np.int32).reshape(-1, 3),
        "orbital_offsets": np.asarray(offsets, dtype=np.int64),
        "numbers": np.asarray(st.numbers, dtype=np.int32),
        "positions": np.asarray(st.positions, dtype=np.float64),
        "cell": np.asarray(st.cell, dtype=np.float64),
        "pbc": np.asarray(st.pbc, dtype=bool),
    }
    n = int(offsets[-1])
    for name, mats in per_op.items():
        for k, shift in enumerate(shifts):
            m = mats.get(shift)
            if m is None:
                data, indices, indptr = (
                    np.zeros(0, np.float32),
                    np.zeros(0, np.int32),
                    np.zeros(n + 1, np.int32),
                )
            else:
                data, indices, indptr = m.data, m.indices, m.indptr
            arrays[f"{name}_{k}_data"] = np.asarray(data, np.float32)
            arrays[f"{name}_{k}_indices"] = np.asarray(indices, np.int32)
            arrays[f"{name}_{k}_indptr"] = np.asarray(indptr, np.int64)
    return arrays


def write_csr_npz(results: Sequence[SparseHamiltonian], path: str | os.PathLike[str]) -> list[Path]:
    """CSR per shift; several structures go to ``stem_{k:04d}.npz`` next to ``path``."""
    base = Path(path)
    if len(results) == 1:
        targets = [base]
    else:
        targets = [base.with_name(f"{base.stem}_{k:04d}{base.suffix}") for k in range(len(results))]
    for sh, target in zip(results, targets, strict=True):
        write_bytes_atomic(target, _npz_bytes(**csr_arrays(sh)))
    return targets


def read_csr_npz(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Inverse of `write_csr_npz` for one file: ``{"H": {shift: csr}, "S": ..., ...}``."""
    import scipy.sparse as sp

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    offsets = arrays["orbital_offsets"]
    n = int(offsets[-1])
    shifts = [tuple(int(x) for x in s) for s in arrays["shifts"]]
    out: dict[str, Any] = {k: arrays[k] for k in ("orbital_offsets", "numbers", "cell", "pbc")}
    for name in ("H", "S"):
        if f"{name}_0_data" not in arrays:
            continue
        out[name] = {
            s: sp.csr_array(
                (
                    arrays[f"{name}_{k}_data"],
                    arrays[f"{name}_{k}_indices"],
                    arrays[f"{name}_{k}_indptr"],
                ),
                shape=(n, n),
            )
            for k, s in enumerate(shifts)
        }
    return out
