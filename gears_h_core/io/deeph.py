"""The DeepH directory format (DeepH-pack / deepx-dock): export of H and S, import to blocks.

One structure per directory::

    POSCAR           cell and positions (VASP 5, Cartesian, Å); atoms grouped by element
    info.json        atoms_quantity, orbits_quantity, orthogonal_basis, spinful,
                     fermi_energy_eV, elements_orbital_map ({"B": [0, 1, 0, 1, 2], ...})
    hamiltonian.h5   H(R) blocks, eV
    overlap.h5       S(R) blocks
    gears_h.json     ours, optional: original atom order, pbc and cell (DeepH readers ignore it)

Each ``.h5`` file holds ``atom_pairs`` int64 ``[N, 5]`` (R1, R2, R3, i, j; atoms 0-based in
**POSCAR order**), ``chunk_shapes`` int64 ``[N, 2]``, ``chunk_boundaries`` int64 ``[N + 1]``
and ``entries`` float64 (every block in C order, concatenated); row p is the block
``M_ij(R) = ⟨φ_i(r − r_i)|M|φ_j(r − r_j − R·cell)⟩``, on-site blocks are the rows
``(0, 0, 0, i, i)``, and both ``(R, i, j)`` and ``(−R, j, i)`` are stored. deepx-dock builds
``M(k) = Σ_R exp(+2πi k·R) M(R)`` (``compute/eigen/matrix_obj.py``), so R is our integer
shift n and the Bloch convention is SPEC §2's. The two files carry identical ``atom_pairs``
(deepx-dock asserts it).

**Atom order.** POSCAR lists atoms grouped by element (elements in order of first
appearance, atoms in their original order within a group), so the atom indices of
``atom_pairs`` are POSCAR indices: POSCAR atom k is our atom ``order[k]`` (`poscar_order`).
``gears_h.json`` records ``order`` so that `read_deeph_folder` can restore our order; a
directory from another tool is read in POSCAR order.

**Orbital order.** DeepH uses the "Wikipedia" real spherical harmonics, m = −l..l, with the
Condon–Shortley phase cancelled (deepx-dock ``convert/*``: p = (y, z, x), d = (xy, yz, z²,
xz, x²−y²), f regular, all with positive Cartesian coefficients). That is GPAW's order and
sign convention (SPEC §2), so `DEEPH_TO_GPAW` is the identity for every l ≤ 3; the tests
prove it against deepx-dock's own Wigner matrices (its ``analyze/dft_equiv``) and its PySCF
table. The conversion still goes through the table, so a change would be one line.

**Periodicity.** DeepH stores no pbc; without ``gears_h.json`` an axis counts as periodic
when some row has R ≠ 0 along it (a molecule: none). A structure whose cell is singular (a
molecule read without a box) gets a box for POSCAR: the periodic vectors plus orthogonal
vectors spanning the atoms with 10 Å of vacuum (no row has R ≠ 0 along them).

h5py is imported inside the functions (it ships with the ``train`` extra).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gears_h_core.assemble.blocks import block_matrix_from_rows, block_matrix_rows, onsite_blocks
from gears_h_core.basis.conventions import OrbitalOrderTable, orbital_permutation
from gears_h_core.basis.orbitals import BasisError, OrbitalBasis
from gears_h_core.io.exporters import write_folder_atomic
from gears_h_core.structure import Structure, StructureError
from gears_h_core.types import BlockMatrix, HoppingGroup, OnsiteGroup, SparseHamiltonian

__all__ = [
    "DEEPH_TO_GPAW",
    "GEARS_H_FILE",
    "HAMILTONIAN_FILE",
    "INFO_FILE",
    "OVERLAP_FILE",
    "POSCAR_FILE",
    "DeepHData",
    "DeepHFormatError",
    "deeph_files",
    "is_deeph_folder",
    "poscar_order",
    "read_deeph_folder",
    "write_deeph_folders",
]

POSCAR_FILE = "POSCAR"
INFO_FILE = "info.json"
HAMILTONIAN_FILE = "hamiltonian.h5"
OVERLAP_FILE = "overlap.h5"
GEARS_H_FILE = "gears_h.json"
H5_KEYS = ("atom_pairs", "chunk_boundaries", "chunk_shapes", "entries")
BOX_VACUUM = 10.0  # Å around the atoms along axes a singular cell lacks

DEEPH_TO_GPAW = OrbitalOrderTable(
    name="DeepH",
    shells={ell: (tuple(range(2 * ell + 1)), (1,) * (2 * ell + 1)) for ell in range(4)},
)
"""DeepH (Wikipedia real harmonics, m = −l..l, no Condon–Shortley phase) into ours: identity."""


class DeepHFormatError(ValueError):
    """A DeepH directory that cannot be read; the message names the directory and file."""


@dataclass(frozen=True, eq=False)
class DeepHData:
    """One DeepH directory read back.

    Attributes:
        hamiltonian: H and S (None for an orthogonal basis without ``overlap.h5``) blocks,
            atoms in our order when ``gears_h.json`` gives it, else in POSCAR order.
        fermi_energy: ``fermi_energy_eV`` of ``info.json`` (None when absent).
        info: ``info.json`` as a dict.
        poscar_order: POSCAR atom k is atom ``poscar_order[k]`` of ``hamiltonian.structure``,
            int64 ``[n_atoms]`` (the identity without ``gears_h.json``).
    """

    hamiltonian: SparseHamiltonian
    fermi_energy: float | None
    info: dict[str, Any]
    poscar_order: np.ndarray


# --------------------------------------------------------------------------------------------
# conventions


def poscar_order(numbers: np.ndarray) -> np.ndarray:
    """Atom order of POSCAR: grouped by element in order of first appearance, stable.

    Returns:
        int64 ``[n_atoms]``: POSCAR atom k is atom ``order[k]``.
    """
    numbers = np.asarray(numbers)
    _, first = np.unique(numbers, return_index=True)
    rank = np.empty(numbers.shape[0], dtype=np.int64)
    for r, z in enumerate(numbers[np.sort(first)]):
        rank[numbers == z] = r
    return np.argsort(rank, kind="stable").astype(np.int64)


def _convert_blocks(
    blocks: np.ndarray, ells_i: Sequence[int], ells_j: Sequence[int], *, to_deeph: bool
) -> np.ndarray:
    """Blocks ``[..., n_i, n_j]`` between DeepH's and our orbital order (`DEEPH_TO_GPAW`).

    Ours from theirs: ``ours[a, b] = s_i[a] s_j[b] theirs[p_i[a], p_j[b]]``; theirs from ours
    is the inverse scatter.
    """
    p_i, s_i = orbital_permutation(ells_i, DEEPH_TO_GPAW)
    p_j, s_j = orbital_permutation(ells_j, DEEPH_TO_GPAW)
    sign = (s_i[:, None] * s_j[None, :]).astype(blocks.dtype, copy=False)
    if not to_deeph:
        return blocks[..., p_i[:, None], p_j[None, :]] * sign
    out = np.empty_like(blocks)
    out[..., p_i[:, None], p_j[None, :]] = blocks * sign
    return out


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[int(z)]


def _poscar_cell(structure: Structure) -> np.ndarray:
    """The structure's cell, or a box completing its periodic vectors when it is singular."""
    cell = np.asarray(structure.cell, dtype=np.float64)
    if abs(np.linalg.det(cell)) > 1e-6:
        return cell
    pbc = np.asarray(structure.pbc, dtype=bool)
    periodic = cell[pbc]  # [rank, 3]
    # rows rank.. of Vᵀ (SVD of the periodic vectors) span their orthogonal complement
    complement = np.linalg.svd(periodic)[2][pbc.sum() :] if pbc.any() else np.eye(3)
    box = cell.copy()
    for a, v in zip(np.flatnonzero(~pbc), complement, strict=True):
        extent = float(np.ptp(structure.positions @ v))
        box[a] = v * (extent + BOX_VACUUM)
    return box


def _poscar_text(structure: Structure, order: np.ndarray, cell: np.ndarray) -> str:
    numbers = structure.numbers[order]
    groups: list[tuple[str, int]] = []
    for z in numbers:
        sym = _symbol(int(z))
        if groups and groups[-1][0] == sym:
            groups[-1] = (sym, groups[-1][1] + 1)
        else:
            groups.append((sym, 1))
    lines = ["POSCAR written by gears_h (DeepH directory)", "1.0"]
    lines += ["  " + "  ".join(repr(float(x)) for x in row) for row in cell]
    lines.append(" ".join(s for s, _ in groups))
    lines.append(" ".join(str(n) for _, n in groups))
    lines.append("Cartesian")
    lines += ["  " + "  ".join(repr(float(x)) for x in p) for p in structure.positions[order]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# export


def _h5_bytes(
    atom_pairs: np.ndarray, shapes: np.ndarray, bounds: np.ndarray, entries: np.ndarray
) -> bytes:
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("atom_pairs", data=atom_pairs.astype(np.int64))
        f.create_dataset("chunk_boundaries", data=bounds.astype(np.int64))
        f.create_dataset("chunk_shapes", data=shapes.astype(np.int64))
        f.create_dataset("entries", data=entries.astype(np.float64))
    return buf.getvalue()


def _deeph_rows(
    bm: BlockMatrix, basis: OrbitalBasis, numbers: np.ndarray, rank: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``atom_pairs`` (POSCAR indices, sorted by R then i, j) and the blocks in DeepH order."""
    n_atoms = numbers.shape[0]
    i, j, shift, hop = block_matrix_rows(bm)
    on = onsite_blocks(bm, n_atoms)
    atoms = np.arange(n_atoms)
    all_i = np.concatenate([atoms, i]).astype(np.int64)
    all_j = np.concatenate([atoms, j]).astype(np.int64)
    all_r = np.concatenate([np.zeros((n_atoms, 3), np.int64), shift.astype(np.int64)])
    blocks = [*on, *hop]
    pairs = np.column_stack([all_r, rank[all_i], rank[all_j]])
    order = np.lexsort((pairs[:, 4], pairs[:, 3], pairs[:, 2], pairs[:, 1], pairs[:, 0]))
    ells = basis.shells
    out = [
        _convert_blocks(
            np.asarray(blocks[r], np.float64),
            ells[int(numbers[all_i[r]])],
            ells[int(numbers[all_j[r]])],
            to_deeph=True,
        )
        for r in order
    ]
    return pairs[order], out


def deeph_files(
    sh: SparseHamiltonian, *, fermi_energy: float, meta: Mapping[str, Any] | None = None
) -> dict[str, bytes]:
    """The files of one DeepH directory for ``sh`` (name -> bytes).

    Args:
        sh: H and S blocks (S is required: DeepH's readers always load ``overlap.h5``).
        fermi_energy: written as ``fermi_energy_eV`` (eV).
        meta: extra provenance for ``gears_h.json``.

    Raises:
        ValueError: no S, or H and S with different rows.
    """
    if sh.S is None:
        raise ValueError(
            "the DeepH format needs the overlap S (overlap.h5), and these blocks have none"
        )
    st = sh.structure
    numbers = st.numbers
    order = poscar_order(numbers)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    basis = sh.basis.restricted_to(st.species)
    h_pairs, h_blocks = _deeph_rows(sh.H, basis, numbers, rank)
    s_pairs, s_blocks = _deeph_rows(sh.S, basis, numbers, rank)
    if not np.array_equal(h_pairs, s_pairs):
        raise ValueError("H and S have different rows; DeepH needs identical atom_pairs")

    def h5(blocks: list[np.ndarray]) -> bytes:
        shapes = np.array([b.shape for b in blocks], dtype=np.int64).reshape(-1, 2)
        bounds = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])])
        entries = np.concatenate([b.reshape(-1) for b in blocks]) if blocks else np.zeros(0)
        return _h5_bytes(h_pairs, shapes, bounds, entries)

    cell = _poscar_cell(st)
    info = {
        "atoms_quantity": int(st.n_atoms),
        "orbits_quantity": int(basis.orbital_offsets(numbers)[-1]),
        "orthogonal_basis": False,
        "spinful": False,
        "fermi_energy_eV": float(fermi_energy),
        "elements_orbital_map": {
            _symbol(z): [int(ell) for ell in basis.shells[z]] for z in basis.species
        },
    }
    ours = {
        "poscar_order": order.tolist(),
        "pbc": [bool(x) for x in st.pbc],
        "cell": np.asarray(st.cell, dtype=np.float64).tolist(),
        "orbital_order": "DeepH = GPAW real harmonics, m = -l..l, p = (y, z, x), no CS phase",
        **(dict(meta) if meta else {}),
    }
    return {
        POSCAR_FILE: _poscar_text(st, order, cell).encode(),
        INFO_FILE: (json.dumps(info, indent=1) + "\n").encode(),
        HAMILTONIAN_FILE: h5(h_blocks),
        OVERLAP_FILE: h5(s_blocks),
        GEARS_H_FILE: (json.dumps(ours, indent=1) + "\n").encode(),
    }


def write_deeph_folders(
    results: Sequence[SparseHamiltonian],
    path: str | os.PathLike[str],
    *,
    fermi_energy: float | Sequence[float],
    names: Sequence[str] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> list[Path]:
    """One DeepH directory per result under ``path`` (``{name}`` or ``structure_{k:04d}``).

    Each directory is written to a temporary sibling and renamed into place (an existing one
    of the same name is replaced), so readers never see half a directory.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    fermi = (
        [float(fermi_energy)] * len(results)  # type: ignore[arg-type]
        if np.ndim(fermi_energy) == 0
        else [float(x) for x in fermi_energy]  # type: ignore[union-attr]
    )
    if len(fermi) != len(results):
        raise ValueError(f"{len(fermi)} Fermi energies for {len(results)} structures")
    out = []
    for k, sh in enumerate(results):
        name = names[k] if names is not None else f"structure_{k:04d}"
        files = deeph_files(sh, fermi_energy=fermi[k], meta=meta)
        out.append(write_folder_atomic(root, name, files))
    return out


# --------------------------------------------------------------------------------------------
# import


def is_deeph_folder(path: str | os.PathLike[str]) -> bool:
    """A directory with ``POSCAR``, ``info.json`` and ``hamiltonian.h5``."""
    p = Path(path)
    return all((p / f).is_file() for f in (POSCAR_FILE, INFO_FILE, HAMILTONIAN_FILE))


def _read_poscar(folder: Path, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(numbers, positions, cell)`` in file order (ASE's VASP reader)."""
    import warnings

    from ase import Atoms
    from ase.io import read as ase_read

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            atoms = ase_read(io.StringIO(text), format="vasp")
    except Exception as exc:  # ASE raises many types on malformed text
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DeepHFormatError(f"{folder / POSCAR_FILE}: cannot be read: {msg}") from exc
    if not isinstance(atoms, Atoms):
        raise DeepHFormatError(f"{folder / POSCAR_FILE}: expected one structure")
    return (
        np.asarray(atoms.numbers, dtype=np.int64),
        np.asarray(atoms.positions, dtype=np.float64),
        np.asarray(atoms.cell.array, dtype=np.float64),
    )


def _read_h5(folder: Path, name: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """``atom_pairs`` int64 ``[N, 5]`` and the N blocks (float64) of one ``.h5`` file."""
    import h5py

    path = folder / name
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in H5_KEYS if k not in f]
            if missing:
                raise DeepHFormatError(f"{path}: missing dataset(s) {missing}")
            pairs = np.asarray(f["atom_pairs"][()])
            bounds = np.asarray(f["chunk_boundaries"][()])
            shapes = np.asarray(f["chunk_shapes"][()])
            entries = np.asarray(f["entries"][()])
    except OSError as exc:
        raise DeepHFormatError(f"{path}: not a readable HDF5 file ({exc})") from exc
    if np.iscomplexobj(entries):
        raise DeepHFormatError(f"{path}: complex entries (spinful data are not supported)")
    n = pairs.shape[0] if pairs.ndim == 2 else -1
    if pairs.ndim != 2 or pairs.shape[1] != 5 or not np.issubdtype(pairs.dtype, np.integer):
        raise DeepHFormatError(f"{path}: atom_pairs must be integer [N, 5], got {pairs.shape}")
    if shapes.shape != (n, 2) or bounds.shape != (n + 1,):
        raise DeepHFormatError(
            f"{path}: {n} atom_pairs but chunk_shapes {shapes.shape} and chunk_boundaries "
            f"{bounds.shape} (expected ({n}, 2) and ({n + 1},))"
        )
    sizes = shapes[:, 0].astype(np.int64) * shapes[:, 1].astype(np.int64)
    expected = np.concatenate([[0], np.cumsum(sizes)])
    if not np.array_equal(bounds.astype(np.int64), expected) or entries.size != expected[-1]:
        raise DeepHFormatError(
            f"{path}: chunk_boundaries do not match chunk_shapes and {entries.size} entries"
        )
    keys, counts = np.unique(pairs, axis=0, return_counts=True)
    if np.any(counts > 1):
        dup = keys[np.flatnonzero(counts > 1)[0]]
        rows = np.flatnonzero(np.all(pairs == dup, axis=1))[:2].tolist()
        raise DeepHFormatError(f"{path}: rows {rows} are the same atom pair {dup.tolist()}")
    flat = np.asarray(entries, dtype=np.float64).reshape(-1)
    blocks = [
        flat[expected[r] : expected[r + 1]].reshape(int(shapes[r, 0]), int(shapes[r, 1]))
        for r in range(n)
    ]
    return pairs.astype(np.int64), blocks


def _block_matrix(
    folder: Path,
    name: str,
    pairs: np.ndarray,
    blocks: list[np.ndarray],
    numbers: np.ndarray,
    basis: OrbitalBasis,
    to_ours: np.ndarray,
) -> BlockMatrix:
    """Rows of one file -> `BlockMatrix` in our atom order and orbital order."""
    path = folder / name
    n_atoms = numbers.shape[0]
    i_p, j_p = pairs[:, 3], pairs[:, 4]
    bad = np.flatnonzero((i_p < 0) | (i_p >= n_atoms) | (j_p < 0) | (j_p >= n_atoms))
    if bad.size:
        r = int(bad[0])
        raise DeepHFormatError(
            f"{path}: row {r}: atom pair ({i_p[r]}, {j_p[r]}) out of range for {n_atoms} atoms"
        )
    i, j, shift = to_ours[i_p], to_ours[j_p], pairs[:, :3]
    counts = basis.orbital_counts(numbers)
    wrong = np.flatnonzero(
        np.array([b.shape for b in blocks], dtype=np.int64).reshape(-1, 2)
        != np.stack([counts[i], counts[j]], 1)
    )
    if wrong.size:
        r = int(wrong[0]) // 2
        raise DeepHFormatError(
            f"{path}: row {r} (R={shift[r].tolist()}, i={i_p[r]}, j={j_p[r]}): block shape "
            f"{blocks[r].shape}, but elements_orbital_map gives "
            f"({counts[i[r]]}, {counts[j[r]]})"
        )
    onsite_rows = np.flatnonzero((i == j) & np.all(shift == 0, axis=1))
    per_atom = np.bincount(i[onsite_rows], minlength=n_atoms)
    if np.any(per_atom != 1):
        a = int(np.flatnonzero(per_atom != 1)[0])
        raise DeepHFormatError(
            f"{path}: atom {int(np.flatnonzero(to_ours == a)[0])} (POSCAR order) has "
            f"{per_atom[a]} on-site rows (0, 0, 0, i, i), expected 1"
        )
    onsite: list[np.ndarray] = [np.zeros(0)] * n_atoms
    for row in onsite_rows:
        onsite[int(i[row])] = blocks[int(row)]
    hop = np.setdiff1d(np.arange(pairs.shape[0]), onsite_rows)
    try:
        bm = block_matrix_from_rows(
            numbers, basis, onsite, i[hop], j[hop], shift[hop], [blocks[int(r)] for r in hop]
        )
    except ValueError as exc:
        raise DeepHFormatError(f"{path}: {exc}") from exc
    ells = basis.shells
    return BlockMatrix(
        onsite=tuple(
            OnsiteGroup(
                z=g.z,
                atoms=g.atoms,
                blocks=_convert_blocks(g.blocks, ells[g.z], ells[g.z], to_deeph=False),
            )
            for g in bm.onsite
        ),
        hopping=tuple(
            HoppingGroup(
                z_i=g.z_i,
                z_j=g.z_j,
                i=g.i,
                j=g.j,
                shift=g.shift,
                blocks=_convert_blocks(g.blocks, ells[g.z_i], ells[g.z_j], to_deeph=False),
            )
            for g in bm.hopping
        ),
    )


def _json(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeepHFormatError(f"{path}: cannot be read as JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DeepHFormatError(f"{path}: expected a JSON object")
    return data


def read_deeph_folder(path: str | os.PathLike[str], *, validate: bool = True) -> DeepHData:
    """Read one DeepH directory into blocks in our orbital order.

    Args:
        path: the directory.
        validate: validate the structure (`Structure` checks: close contacts, ...).

    Raises:
        DeepHFormatError: naming the file and the check that failed.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DeepHFormatError(f"{folder}: not a DeepH directory (no such folder)")
    for name in (POSCAR_FILE, INFO_FILE, HAMILTONIAN_FILE):
        if not (folder / name).is_file():
            raise DeepHFormatError(f"{folder}: missing file {name}")
    info = _json(folder, INFO_FILE)
    need = ("atoms_quantity", "orbits_quantity", "spinful", "elements_orbital_map")
    absent = [k for k in need if k not in info]
    if absent:
        raise DeepHFormatError(f"{folder / INFO_FILE}: missing key(s) {absent}")
    if info["spinful"]:
        raise DeepHFormatError(f"{folder / INFO_FILE}: spinful data are not supported")
    from ase.data import atomic_numbers

    emap = info["elements_orbital_map"]
    try:
        basis = OrbitalBasis({atomic_numbers[str(sym)]: tuple(ls) for sym, ls in emap.items()})
    except (KeyError, TypeError, AttributeError, BasisError) as exc:
        raise DeepHFormatError(
            f"{folder / INFO_FILE}: elements_orbital_map cannot be used: {exc}"
        ) from exc

    numbers, positions, cell = _read_poscar(folder, (folder / POSCAR_FILE).read_text())
    if numbers.shape[0] != int(info["atoms_quantity"]):
        raise DeepHFormatError(
            f"{folder / POSCAR_FILE}: {numbers.shape[0]} atoms, info.json says "
            f"{info['atoms_quantity']}"
        )
    missing_el = sorted(set(numbers.tolist()) - set(basis.species))
    if missing_el:
        raise DeepHFormatError(
            f"{folder / INFO_FILE}: element {_symbol(missing_el[0])} of POSCAR has no entry "
            "in elements_orbital_map"
        )
    n_orb = int(basis.orbital_offsets(numbers)[-1])
    if n_orb != int(info["orbits_quantity"]):
        raise DeepHFormatError(
            f"{folder / INFO_FILE}: orbits_quantity {info['orbits_quantity']}, but POSCAR and "
            f"elements_orbital_map give {n_orb}"
        )

    h_pairs, h_blocks = _read_h5(folder, HAMILTONIAN_FILE)
    ours = _json(folder, GEARS_H_FILE) if (folder / GEARS_H_FILE).is_file() else {}
    n_atoms = numbers.shape[0]
    order = np.asarray(ours.get("poscar_order", np.arange(n_atoms)), dtype=np.int64)
    if sorted(order.tolist()) != list(range(n_atoms)):
        raise DeepHFormatError(f"{folder / GEARS_H_FILE}: poscar_order is not a permutation")
    to_ours = order  # POSCAR index k -> our index order[k]
    our_numbers = np.empty_like(numbers)
    our_numbers[order] = numbers
    our_positions = np.empty_like(positions)
    our_positions[order] = positions
    if "pbc" in ours:
        pbc = np.asarray(ours["pbc"], dtype=bool)
    else:
        pbc = np.any(h_pairs[:, :3] != 0, axis=0)
    our_cell = np.asarray(ours.get("cell", cell), dtype=np.float64)
    try:
        structure = Structure.from_arrays(
            our_numbers, our_positions, our_cell, pbc, validate=validate
        )
    except StructureError as exc:
        raise DeepHFormatError(f"{folder / POSCAR_FILE}: {exc}") from exc
    along_free = np.flatnonzero(np.any(h_pairs[:, :3][:, ~pbc] != 0, axis=1))
    if along_free.size:
        r = int(along_free[0])
        raise DeepHFormatError(
            f"{folder / HAMILTONIAN_FILE}: row {r} has R = {h_pairs[r, :3].tolist()} along a "
            "non-periodic axis"
        )

    H = _block_matrix(folder, HAMILTONIAN_FILE, h_pairs, h_blocks, our_numbers, basis, to_ours)
    S = None
    if (folder / OVERLAP_FILE).is_file():
        s_pairs, s_blocks = _read_h5(folder, OVERLAP_FILE)
        if not np.array_equal(s_pairs, h_pairs):
            if s_pairs.shape != h_pairs.shape or not np.array_equal(
                np.unique(s_pairs, axis=0), np.unique(h_pairs, axis=0)
            ):
                raise DeepHFormatError(
                    f"{folder}: {OVERLAP_FILE} and {HAMILTONIAN_FILE} hold different atom_pairs"
                )
        S = _block_matrix(folder, OVERLAP_FILE, s_pairs, s_blocks, our_numbers, basis, to_ours)
    elif not info.get("orthogonal_basis", False):
        raise DeepHFormatError(
            f"{folder}: missing file {OVERLAP_FILE} (info.json says the basis is not orthogonal)"
        )
    fermi = info.get("fermi_energy_eV")
    if fermi is not None and not isinstance(fermi, int | float):
        raise DeepHFormatError(f"{folder / INFO_FILE}: fermi_energy_eV is not a number")
    return DeepHData(
        hamiltonian=SparseHamiltonian(
            structure=structure, basis=basis.restricted_to(structure.species), H=H, S=S
        ),
        fermi_energy=None if fermi is None else float(fermi),
        info=info,
        poscar_order=order,
    )
