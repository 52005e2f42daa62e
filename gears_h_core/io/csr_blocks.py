"""CSR matrices per lattice shift -> atom-pair blocks (the inverse of ``to_csr_per_shift``).

Reads back what `gears_h_core.io.exporters.write_csr_npz` (``gears_h infer -o x.npz``) and
`gears_h_core.io.sisl_export` write: one N × N sparse matrix per integer shift n, orbital
index ``offsets[a] + μ``. A block (i, j, n) exists when the matrix of shift n stores any
element in its (i, j) region (explicitly stored zeros count, so the writers' blocks come back
row for row); elements not stored inside an existing block are 0.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from gears_h_core.assemble.blocks import block_matrix_from_rows
from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.structure import Structure
from gears_h_core.types import BlockMatrix, SparseHamiltonian

__all__ = ["block_matrix_from_csr", "read_csr_npz_hamiltonian"]


def block_matrix_from_csr(
    matrices: Mapping[tuple[int, int, int], sp.sparray | sp.spmatrix],
    numbers: np.ndarray,
    basis: OrbitalBasis,
) -> BlockMatrix:
    """Cut per-shift matrices into a `BlockMatrix` (float32 blocks).

    Args:
        matrices: ``{(n1, n2, n3): N × N sparse matrix}``.
        numbers: atomic numbers ``[n_atoms]``; basis: orbitals per element.

    Raises:
        ValueError: a matrix of the wrong size, or an atom without an on-site block.
    """
    numbers = np.asarray(numbers)
    offsets = basis.orbital_offsets(numbers)
    n_atoms, n_orb = numbers.shape[0], int(offsets[-1])
    atom_of = np.repeat(np.arange(n_atoms), np.diff(offsets))  # orbital -> atom
    onsite: list[np.ndarray | None] = [None] * n_atoms
    rows_i: list[int] = []
    rows_j: list[int] = []
    rows_n: list[tuple[int, int, int]] = []
    blocks: list[np.ndarray] = []
    for shift in sorted(matrices):
        m = sp.coo_array(matrices[shift])
        if m.shape != (n_orb, n_orb):
            raise ValueError(f"shift {shift}: matrix {m.shape}, expected {n_orb} × {n_orb}")
        m.sum_duplicates()
        r, c = m.row.astype(np.int64), m.col.astype(np.int64)
        ai, aj = atom_of[r], atom_of[c]
        key = ai * n_atoms + aj
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        for sel in np.split(order, bounds):
            if sel.size == 0:
                continue
            i, j = int(ai[sel[0]]), int(aj[sel[0]])
            blk = np.zeros((offsets[i + 1] - offsets[i], offsets[j + 1] - offsets[j]), np.float32)
            blk[r[sel] - offsets[i], c[sel] - offsets[j]] = m.data[sel]
            if i == j and shift == (0, 0, 0):
                onsite[i] = blk
            else:
                rows_i.append(i)
                rows_j.append(j)
                rows_n.append(shift)
                blocks.append(blk)
    missing = [a for a, b in enumerate(onsite) if b is None]
    if missing:
        raise ValueError(f"atom {missing[0]}: no on-site block (nothing stored at shift 0)")
    return block_matrix_from_rows(
        numbers,
        basis,
        [b for b in onsite if b is not None],
        np.asarray(rows_i, dtype=np.int64),
        np.asarray(rows_j, dtype=np.int64),
        np.asarray(rows_n, dtype=np.int64).reshape(-1, 3),
        blocks,
    )


def read_csr_npz_hamiltonian(
    path: str | os.PathLike[str], basis: OrbitalBasis
) -> SparseHamiltonian:
    """A ``.npz`` of `write_csr_npz` back into a `SparseHamiltonian`.

    The file holds numbers, positions, cell and pbc but not the shells of each element, so
    ``basis`` (e.g. the model bundle's) must be given; it must match the stored offsets.
    """
    from gears_h_core.io.exporters import read_csr_npz

    data: dict[str, Any] = read_csr_npz(path)
    numbers = np.asarray(data["numbers"])
    if not np.array_equal(basis.orbital_offsets(numbers), data["orbital_offsets"]):
        raise ValueError(f"{path}: the orbital offsets do not match the given basis")
    with np.load(path, allow_pickle=False) as z:
        positions = np.asarray(z["positions"], dtype=np.float64)
    structure = Structure.from_arrays(numbers, positions, data["cell"], data["pbc"], validate=False)
    H = block_matrix_from_csr(data["H"], numbers, basis)
    S = block_matrix_from_csr(data["S"], numbers, basis) if "S" in data else None
    return SparseHamiltonian(
        structure=structure, basis=basis.restricted_to(structure.species), H=H, S=S
    )
