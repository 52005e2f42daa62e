"""Snapshot folders (GEARS H format, extended with S, shifts, reference eigenvalues) -> `LabeledStructure`.

A snapshot folder (``shared/data/README.md`` §2) holds ``atoms.extxyz``,
``orbital_ells.json``, ``ijD.npz``, ``hblocks_{on,off}-diagonal.npz`` and, in the extended
sets, ``sblocks_{on,off}-diagonal.npz``, ``ref_eigenvalues.npz`` and ``meta.json``. A
dataset is a folder of snapshot folders.

Two kinds of folder:

* **real-space** (h-BN, MoS2, butanol): one row per lattice image ``(i, j, T)``; the blocks
  are H_ij(T) and S_ij(T), so H(k) can be built at any k.
* **Γ-only** (GEARS H's own format, e.g. the WSe2 example): no ``sblocks`` files; every
  (i, j) appears once and its block is the image sum ``Σ_T H_ij(T)``. The rows still carry
  the shift recovered from D, but only the Γ matrix is meaningful. Detected by the absence
  of the ``sblocks`` files and flagged by ``LabeledStructure.gamma_only``.

Every check failure raises `DatasetError` whose message names the folder, the file and,
where it applies, the row (or atom). The reader only reads: it never writes into a dataset
folder and keeps no cache.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gears_h_core.assemble.blocks import block_matrix_from_rows, lattice_shifts
from gears_h_core.basis.orbitals import BasisError, OrbitalBasis
from gears_h_core.graph.neighbors import pair_keys
from gears_h_core.io.deeph import is_deeph_folder
from gears_h_core.structure import Structure, StructureError
from gears_h_core.types import BlockMatrix, SparseHamiltonian
from training.data.safe_npz import NpzError, load_npz

__all__ = [
    "ATOMS_FILE",
    "BASIS_FILE",
    "HOPPING_FILES",
    "IJD_FILE",
    "META_FILE",
    "ONSITE_FILES",
    "REF_FILE",
    "TRANSPOSE_TOLERANCE",
    "DatasetError",
    "LabeledStructure",
    "ReferenceEigenvalues",
    "read_dataset",
    "read_snapshot",
]

ATOMS_FILE = "atoms.extxyz"
BASIS_FILE = "orbital_ells.json"
IJD_FILE = "ijD.npz"
ONSITE_FILES = {"h": "hblocks_on-diagonal.npz", "s": "sblocks_on-diagonal.npz"}
HOPPING_FILES = {"h": "hblocks_off-diagonal.npz", "s": "sblocks_off-diagonal.npz"}
REF_FILE = "ref_eigenvalues.npz"
META_FILE = "meta.json"
REQUIRED_FILES = (ATOMS_FILE, BASIS_FILE, IJD_FILE, ONSITE_FILES["h"], HOPPING_FILES["h"])

TRANSPOSE_TOLERANCE = 1e-5  # absolute (block units) and relative, partner rows / on-site


class DatasetError(ValueError):
    """A malformed snapshot folder; the message names folder, file and row."""


@dataclass(frozen=True, eq=False)
class ReferenceEigenvalues:
    """Eigenvalues computed by the DFT code itself (``ref_eigenvalues.npz``), eV.

    Attributes:
        eps_gamma: lowest (GPAW) or all (PySCF) eigenvalues at Γ, float64 ``[n_bands]``.
        eps_gamma_scf: eigenvalues of the last SCF step, float64 ``[n]`` or None.
        eps_ktest: eigenvalues at ``k_test``, float64 ``[n_bands]`` or None (molecules).
        k_test: the off-mesh k point in reduced coordinates, float64 ``[3]`` or None.
        e_fermi: Fermi level (periodic) or midgap (molecules), or None.
        homo, lumo: molecules only, else None.
    """

    eps_gamma: np.ndarray | None = None
    eps_gamma_scf: np.ndarray | None = None
    eps_ktest: np.ndarray | None = None
    k_test: np.ndarray | None = None
    e_fermi: float | None = None
    homo: float | None = None
    lumo: float | None = None


@dataclass(frozen=True, eq=False)
class LabeledStructure:
    """One snapshot: structure, basis and DFT blocks, plus what the folder says about them.

    Attributes:
        name: the folder name.
        path: the folder.
        hamiltonian: H (and S when the folder has it) as sparse atom-pair blocks.
        reference: reference eigenvalues or None.
        meta: ``meta.json`` as a dict ({} when absent).
        gamma_only: True for folders without overlap files (GEARS H's Γ-only format): their
            blocks are image-summed Γ blocks, so only the Γ matrix is meaningful.
        fingerprint: sha256 (hex) over the names and bytes of every file of the folder.
    """

    name: str
    path: Path
    hamiltonian: SparseHamiltonian
    reference: ReferenceEigenvalues | None
    meta: dict[str, Any]
    gamma_only: bool
    fingerprint: str

    @property
    def structure(self) -> Structure:
        return self.hamiltonian.structure

    @property
    def basis(self) -> OrbitalBasis:
        return self.hamiltonian.basis


# --------------------------------------------------------------------------------------
# helpers


class _Folder:
    """The bytes of one folder's files, read once, and error messages naming them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_dir():
            raise DatasetError(f"{path}: not a snapshot folder (does not exist or not a folder)")
        self.files: dict[str, bytes] = {}
        for entry in sorted(path.iterdir(), key=lambda p: p.name):
            if entry.is_file():
                self.files[entry.name] = entry.read_bytes()

    def error(self, file: str, message: str) -> DatasetError:
        return DatasetError(f"{self.path / file}: {message}")

    def require(self, file: str) -> bytes:
        try:
            return self.files[file]
        except KeyError:
            raise DatasetError(f"{self.path}: missing file {file}") from None

    def npz(self, file: str) -> dict[str, np.ndarray]:
        try:
            return load_npz(io.BytesIO(self.require(file)), name=str(self.path / file))
        except NpzError as exc:
            raise DatasetError(str(exc)) from exc

    def key(self, file: str, arrays: Mapping[str, np.ndarray], key: str) -> np.ndarray:
        if key not in arrays:
            raise self.error(file, f"key {key!r} missing (keys: {sorted(arrays)})")
        return arrays[key]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name, data in self.files.items():
            encoded = name.encode()
            h.update(len(encoded).to_bytes(8, "little") + encoded)
            h.update(len(data).to_bytes(8, "little") + data)
        return h.hexdigest()


def _block_list(
    folder: _Folder, file: str, raw: np.ndarray, expected: np.ndarray, what: str
) -> list[np.ndarray] | np.ndarray:
    """Blocks of one file as float32, shapes checked against ``expected`` ``[n, 2]``.

    Returns either a float32 ``[n, a, b]`` array (uniform blocks, e.g. the WSe2 layout of a
    ``(N, 9, 9)`` object array of floats) or a list of float32 ``[a_p, b_p]`` arrays.
    """
    n = int(expected.shape[0])
    if raw.ndim == 0 or raw.shape[0] != n:
        count = 0 if raw.ndim == 0 else raw.shape[0]
        raise folder.error(file, f"{count} blocks, expected {n} ({what}s)")
    if raw.ndim == 3:
        try:
            arr = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise folder.error(file, f"blocks are not numeric: {exc}") from exc
        bad = np.flatnonzero(np.any(expected != np.asarray(arr.shape[1:]), axis=1))
        if bad.size:
            r = int(bad[0])
            raise folder.error(
                file,
                f"{what} {r}: block shape {arr.shape[1:]} does not match {BASIS_FILE} "
                f"(expected {tuple(int(x) for x in expected[r])})",
            )
        return arr
    if raw.ndim != 1:
        raise folder.error(
            file, f"blocks array has shape {raw.shape}, expected [{n}] or [{n}, a, b]"
        )
    blocks: list[np.ndarray] = []
    for r, blk in enumerate(raw):
        try:
            b = np.asarray(blk, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise folder.error(file, f"{what} {r}: block is not numeric: {exc}") from exc
        blocks.append(b)
    shapes = np.array([b.shape if b.ndim == 2 else (-1, -1) for b in blocks], dtype=np.int64)
    bad = np.flatnonzero(np.any(shapes.reshape(-1, 2) != expected, axis=1))
    if bad.size:
        r = int(bad[0])
        raise folder.error(
            file,
            f"{what} {r}: block shape {blocks[r].shape} does not match {BASIS_FILE} "
            f"(expected {tuple(int(x) for x in expected[r])})",
        )
    return blocks


def _read_blocks(
    folder: _Folder, file: str, key: str, expected: np.ndarray, what: str
) -> list[np.ndarray] | np.ndarray:
    """The blocks of ``file``: the format's pickled object array under ``key``, or the
    pickle-free form ``gears_h infer`` writes: ``{key}_flat``, every block's float32
    elements in C order, concatenated (shapes from the basis, ``expected`` ``[n, 2]``)."""
    arrays = folder.npz(file)
    if key in arrays or f"{key}_flat" not in arrays:
        return _block_list(folder, file, folder.key(file, arrays, key), expected, what)
    flat = np.asarray(arrays[f"{key}_flat"])
    sizes = expected[:, 0] * expected[:, 1]
    if flat.ndim != 1 or flat.dtype.kind != "f" or flat.size != int(sizes.sum()):
        raise folder.error(
            file,
            f"{key}_flat: {flat.size} {flat.dtype} values in shape {flat.shape}, expected a "
            f"1-D float array of {int(sizes.sum())} (the {what} blocks of {BASIS_FILE})",
        )
    parts = np.split(flat.astype(np.float32), np.cumsum(sizes)[:-1])
    return [p.reshape(int(a), int(b)) for p, (a, b) in zip(parts, expected, strict=True)]


def _take(blocks: Sequence[np.ndarray] | np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Stack ``blocks[rows]`` (all the same shape) into ``[len(rows), a, b]``."""
    if isinstance(blocks, np.ndarray):
        return blocks[rows]
    return np.stack([blocks[int(r)] for r in rows])


def _partner_rows(
    folder: _Folder, i: np.ndarray, j: np.ndarray, shift: np.ndarray, n_atoms: int
) -> np.ndarray:
    """Index of the row ``(j, i, −n)`` of every row ``(i, j, n)``; also rejects duplicate
    and self rows. Returns int64 ``[n_pairs]``."""
    self_rows = np.flatnonzero((i == j) & np.all(shift == 0, axis=1))
    if self_rows.size:
        r = int(self_rows[0])
        raise folder.error(
            IJD_FILE,
            f"row {r} (i={i[r]}, j={j[r]}, n=(0, 0, 0)): self row; on-site blocks belong in "
            f"{ONSITE_FILES['h']}",
        )
    try:
        keys = pair_keys(n_atoms, i, j, shift)
        partner_keys = pair_keys(n_atoms, j, i, -shift)
    except ValueError as exc:
        raise folder.error(IJD_FILE, str(exc)) from exc
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if dup.size:
        a, b = sorted(int(x) for x in order[dup[0] : dup[0] + 2])
        raise folder.error(
            IJD_FILE,
            f"rows {a} and {b} are the same (i={i[a]}, j={j[a]}, n={shift[a].tolist()})",
        )
    pos = np.clip(np.searchsorted(sorted_keys, partner_keys), 0, max(len(keys) - 1, 0))
    found = sorted_keys[pos] == partner_keys if len(keys) else np.zeros(0, bool)
    missing = np.flatnonzero(~found)
    if missing.size:
        r = int(missing[0])
        raise folder.error(
            IJD_FILE,
            f"row {r} (i={i[r]}, j={j[r]}, n={shift[r].tolist()}) has no partner row "
            f"(i={j[r]}, j={i[r]}, n={(-shift[r]).tolist()})",
        )
    return order[pos]


def _check_transposes(
    folder: _Folder,
    file: str,
    numbers: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    partner: np.ndarray,
    blocks: Sequence[np.ndarray] | np.ndarray,
) -> None:
    """Partner blocks are transposes: |B_p − B_q^T| ≤ tol·(1 + |B_q|), per species pair."""
    zi = numbers[i].astype(np.int64)
    zj = numbers[j].astype(np.int64)
    key = np.minimum(zi, zj) * 256 + np.maximum(zi, zj)
    tol = TRANSPOSE_TOLERANCE
    for k in np.unique(key):
        rows = np.flatnonzero((key == k) & (zi <= zj))  # one direction suffices
        if rows.size == 0:
            continue
        bp = _take(blocks, rows)
        bq = _take(blocks, partner[rows]).transpose(0, 2, 1)
        excess = np.abs(bp - bq) - tol * (1.0 + np.abs(bq))
        worst = excess.reshape(rows.size, -1).max(axis=1)
        nonfinite = ~np.all(np.isfinite(bp.reshape(rows.size, -1)), axis=1) | ~np.all(
            np.isfinite(bq.reshape(rows.size, -1)), axis=1
        )
        bad = np.flatnonzero((worst > 0) | nonfinite)
        if bad.size:
            pick = bad[np.argmax(np.where(nonfinite[bad], np.inf, worst[bad]))]
            r = int(rows[pick])
            q = int(partner[r])
            if nonfinite[pick]:
                p = r if not np.all(np.isfinite(bp[pick])) else q
                raise folder.error(file, f"row {p} (i={i[p]}, j={j[p]}): block holds NaN or inf")
            diff = float(np.max(np.abs(bp[pick] - bq[pick])))
            raise folder.error(
                file,
                f"row {r} (i={i[r]}, j={j[r]}): block is not the transpose of its partner "
                f"row {q} (max |difference| {diff:.3g}, tolerance {tol:g} abs + rel)",
            )


def _check_onsite_symmetric(
    folder: _Folder, file: str, numbers: np.ndarray, blocks: Sequence[np.ndarray] | np.ndarray
) -> None:
    tol = TRANSPOSE_TOLERANCE
    for z in np.unique(numbers):
        atoms = np.flatnonzero(numbers == z)
        b = _take(blocks, atoms)
        excess = np.abs(b - b.transpose(0, 2, 1)) - tol * (1.0 + np.abs(b))
        worst = excess.reshape(atoms.size, -1).max(axis=1)
        bad = np.flatnonzero((worst > 0) | ~np.all(np.isfinite(b.reshape(atoms.size, -1)), axis=1))
        if bad.size:
            a = int(atoms[bad[0]])
            raise folder.error(file, f"atom {a}: on-site block is not symmetric or not finite")


def _reference(folder: _Folder) -> ReferenceEigenvalues | None:
    if REF_FILE not in folder.files:
        return None
    arrays = folder.npz(REF_FILE)

    def vec(key: str) -> np.ndarray | None:
        if key not in arrays:
            return None
        try:
            return np.asarray(arrays[key], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise folder.error(REF_FILE, f"key {key!r} is not numeric: {exc}") from exc

    def scalar(key: str) -> float | None:
        v = vec(key)
        if v is None:
            return None
        if v.shape != (1,):
            raise folder.error(REF_FILE, f"key {key!r}: expected a scalar, got shape {v.shape}")
        return float(v[0])

    k_test = vec("k_test")
    if k_test is not None and k_test.shape != (3,):
        raise folder.error(REF_FILE, f"key 'k_test': expected shape (3,), got {k_test.shape}")
    return ReferenceEigenvalues(
        eps_gamma=vec("eps_gamma"),
        eps_gamma_scf=vec("eps_gamma_scf"),
        eps_ktest=vec("eps_ktest"),
        k_test=k_test,
        e_fermi=scalar("e_fermi"),
        homo=scalar("homo"),
        lumo=scalar("lumo"),
    )


def _structure(folder: _Folder, basis: OrbitalBasis, validate: bool) -> Structure:
    from ase.io import read as ase_read

    text = folder.require(ATOMS_FILE).decode("utf-8", errors="replace")
    try:
        frames = ase_read(io.StringIO(text), index=":", format="extxyz")
    except Exception as exc:  # ASE raises many types on malformed text
        raise folder.error(ATOMS_FILE, f"cannot be read as extended XYZ: {exc}") from exc
    if not isinstance(frames, list) or len(frames) != 1:
        count = len(frames) if isinstance(frames, list) else 0
        raise folder.error(ATOMS_FILE, f"expected exactly one structure, found {count}")
    atoms = frames[0]
    numbers = np.asarray(atoms.numbers)
    unknown = np.flatnonzero(~np.isin(numbers, np.asarray(basis.species)))
    if unknown.size:
        a = int(unknown[0])
        from ase.data import chemical_symbols

        z = int(numbers[a])
        symbol = chemical_symbols[z] if 0 < z < len(chemical_symbols) else "?"
        raise folder.error(
            ATOMS_FILE,
            f"atom {a}: element {symbol} (Z={z}) has no entry in {BASIS_FILE} "
            f"(elements there: {list(basis.species)})",
        )
    try:
        return Structure.from_ase(atoms, validate=validate)
    except StructureError as exc:
        raise folder.error(ATOMS_FILE, str(exc)) from exc


def _operator(
    folder: _Folder,
    what: str,
    numbers: np.ndarray,
    basis: OrbitalBasis,
    counts: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    shift: np.ndarray,
    partner: np.ndarray,
    validate: bool,
) -> BlockMatrix:
    """Read and check one operator (``what`` = "h" or "s") into a `BlockMatrix`."""
    key = f"{what}blocks"
    on_file, off_file = ONSITE_FILES[what], HOPPING_FILES[what]
    onsite = _read_blocks(folder, on_file, key, np.stack([counts, counts], 1), "atom")
    hopping = _read_blocks(folder, off_file, key, np.stack([counts[i], counts[j]], 1), "row")
    if validate:
        _check_onsite_symmetric(folder, on_file, numbers, onsite)
        _check_transposes(folder, off_file, numbers, i, j, partner, hopping)
    try:
        return block_matrix_from_rows(numbers, basis, onsite, i, j, shift, hopping)
    except ValueError as exc:  # shapes were checked above; kept as a safety net
        raise folder.error(off_file, str(exc)) from exc


# --------------------------------------------------------------------------------------
# public API


def read_snapshot(folder: str | Path, *, validate: bool = True) -> LabeledStructure:
    """Read one snapshot folder (or a DeepH directory: `training.data.deeph_folder`).

    Args:
        folder: the snapshot folder.
        validate: also validate the structure (close contacts, `Structure` checks), the
            on-site symmetry and that partner blocks are transposes (within
            `TRANSPOSE_TOLERANCE`). The layout checks (files, keys, counts, block shapes,
            index ranges, integer lattice shifts, partner rows present) always run, since
            nothing can be built without them.

    Returns:
        `LabeledStructure`.

    Raises:
        DatasetError: naming folder, file and row of the first failed check.
    """
    path = Path(folder)
    if not (path / ATOMS_FILE).is_file() and is_deeph_folder(path):
        from training.data.deeph_folder import read_deeph_snapshot

        return read_deeph_snapshot(path, validate=validate)
    f = _Folder(path)
    for name in REQUIRED_FILES:
        f.require(name)

    try:
        basis = OrbitalBasis.from_json_dict(json.loads(f.require(BASIS_FILE)))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, BasisError) as exc:
        raise f.error(BASIS_FILE, f"malformed orbital shells: {exc}") from exc
    structure = _structure(f, basis, validate)
    numbers = structure.numbers
    n_atoms = structure.n_atoms
    counts = basis.orbital_counts(numbers)

    ijd = f.npz(IJD_FILE)
    ij = f.key(IJD_FILE, ijd, "ij")
    D = f.key(IJD_FILE, ijd, "D")
    if ij.ndim != 2 or ij.shape[1] != 2 or not np.issubdtype(ij.dtype, np.integer):
        raise f.error(IJD_FILE, f"'ij' must be integer [P, 2], got {ij.dtype} {ij.shape}")
    if D.ndim != 2 or D.shape[1] != 3 or not np.issubdtype(D.dtype, np.floating):
        raise f.error(IJD_FILE, f"'D' must be float [P, 3], got {D.dtype} {D.shape}")
    if D.shape[0] != ij.shape[0]:
        raise f.error(IJD_FILE, f"'D' has {D.shape[0]} rows but 'ij' has {ij.shape[0]}")
    i = ij[:, 0].astype(np.int64)
    j = ij[:, 1].astype(np.int64)
    bad = np.flatnonzero((i < 0) | (i >= n_atoms) | (j < 0) | (j >= n_atoms))
    if bad.size:
        r = int(bad[0])
        raise f.error(
            IJD_FILE, f"row {r}: atom index ({i[r]}, {j[r]}) out of range for {n_atoms} atoms"
        )
    try:
        shift = lattice_shifts(structure, i, j, D)
    except ValueError as exc:
        raise f.error(IJD_FILE, str(exc)) from exc
    partner = _partner_rows(f, i, j, shift, n_atoms)

    H = _operator(f, "h", numbers, basis, counts, i, j, shift, partner, validate)
    s_present = [name for name in (ONSITE_FILES["s"], HOPPING_FILES["s"]) if name in f.files]
    if len(s_present) == 1:
        other = ({ONSITE_FILES["s"], HOPPING_FILES["s"]} - set(s_present)).pop()
        raise DatasetError(f"{path}: missing file {other} (its counterpart {s_present[0]} exists)")
    S = (
        _operator(f, "s", numbers, basis, counts, i, j, shift, partner, validate)
        if s_present
        else None
    )

    meta: dict[str, Any] = {}
    if META_FILE in f.files:
        try:
            loaded = json.loads(f.files[META_FILE])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise f.error(META_FILE, f"not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise f.error(META_FILE, "expected a JSON object")
        meta = loaded

    return LabeledStructure(
        name=path.name,
        path=path,
        hamiltonian=SparseHamiltonian(structure=structure, basis=basis, H=H, S=S),
        reference=_reference(f),
        meta=meta,
        gamma_only=S is None,
        fingerprint=f.fingerprint(),
    )


def read_dataset(
    path: str | Path, limit: int | None = None, *, validate: bool = True
) -> list[LabeledStructure]:
    """Read a dataset: a folder of snapshot folders (sorted by name), or one snapshot folder;
    DeepH directories count as snapshot folders.

    Entries that are not folders are skipped. ``limit`` keeps the first ``limit`` snapshots
    (in name order).

    Raises:
        DatasetError: the path is not a folder, holds no snapshot folder, or a snapshot is
            malformed.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be ≥ 0, got {limit}")
    if (root / ATOMS_FILE).is_file() or is_deeph_folder(root):
        folders = [root]
    else:
        folders = sorted(
            (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.name,
        )
        if not folders:
            raise DatasetError(f"{root}: no snapshot folders")
    if limit is not None:
        folders = folders[:limit]
    return [read_snapshot(p, validate=validate) for p in folders]
