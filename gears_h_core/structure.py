"""Atomic structures: the validated input of every prediction.

`Structure` is a frozen container of numpy arrays (host side). It is built from an ASE
`Atoms` object or from plain arrays and validated once, here, so later stages can trust it:

* species are known elements (1..118), positions and cell are finite,
* no two atoms (including periodic images) are closer than ``min_distance`` (0.1 Å),
* along every periodic axis the cell vector is non-degenerate (the periodic part of the
  cell has full rank).

Every failure raises `StructureError` (a `ValueError`) whose message names the field or
atom, so the CLI and the service can report it in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ase import Atoms

MAX_ATOMIC_NUMBER = 118
MIN_DISTANCE = 0.1  # Å; closer atoms are rejected as overlapping
#: neighbour-search radius (Å) of the close-contact check (see `_check_close_contacts`)
CONTACT_SEARCH_RADIUS = 1.0
#: positions and lattice vectors beyond this (Å) are refused: no real structure is that large,
#: and the neighbour search fails hard (SIGFPE in vesin) around 1e9 Å
MAX_COORDINATE = 1e5


class StructureError(ValueError):
    """A structure that cannot be predicted on; the message names the atom or field."""


@dataclass(frozen=True, eq=False)
class Structure:
    """One atomic structure.

    Attributes:
        numbers: atomic numbers, int32 ``[n_atoms]``.
        positions: Cartesian positions in Å, float64 ``[n_atoms, 3]``.
        cell: lattice vectors as rows in Å, float64 ``[3, 3]`` (may be zero along
            non-periodic axes).
        pbc: periodicity per axis, bool ``[3]``.
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def species(self) -> tuple[int, ...]:
        """Sorted distinct atomic numbers."""
        return tuple(int(z) for z in np.unique(self.numbers))

    @classmethod
    def from_arrays(
        cls,
        numbers: np.ndarray | list[int],
        positions: np.ndarray | list[list[float]],
        cell: np.ndarray | list[list[float]] | None = None,
        pbc: np.ndarray | list[bool] | bool = False,
        *,
        validate: bool = True,
        min_distance: float = MIN_DISTANCE,
    ) -> Structure:
        """Build (and by default validate) a structure from arrays."""
        try:
            numbers_arr = np.asarray(numbers)
            positions_arr = np.asarray(positions, dtype=np.float64)
            cell_arr = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
            pbc_arr = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
        except (TypeError, ValueError) as exc:
            raise StructureError(f"structure arrays cannot be read: {exc}") from exc
        if numbers_arr.ndim != 1:
            raise StructureError(f"numbers: expected shape [n_atoms], got {numbers_arr.shape}")
        if numbers_arr.size and not np.issubdtype(numbers_arr.dtype, np.integer):
            if not np.all(np.equal(np.mod(numbers_arr, 1), 0)):
                raise StructureError("numbers: atomic numbers must be integers")
        numbers_arr = numbers_arr.astype(np.int32)
        if positions_arr.shape != (numbers_arr.shape[0], 3):
            raise StructureError(
                f"positions: expected shape [{numbers_arr.shape[0]}, 3], got {positions_arr.shape}"
            )
        if cell_arr.shape != (3, 3):
            raise StructureError(f"cell: expected shape [3, 3], got {cell_arr.shape}")
        structure = cls(numbers_arr, positions_arr, cell_arr, pbc_arr)
        if validate:
            validate_structure(structure, min_distance=min_distance)
        return structure

    @classmethod
    def from_ase(
        cls, atoms: Atoms, *, validate: bool = True, min_distance: float = MIN_DISTANCE
    ) -> Structure:
        """Build a structure from an ASE `Atoms` object."""
        return cls.from_arrays(
            atoms.numbers,
            atoms.positions,
            np.asarray(atoms.cell.array),
            atoms.pbc,
            validate=validate,
            min_distance=min_distance,
        )

    def to_ase(self) -> Atoms:
        from ase import Atoms

        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)

    def transformed(self, rotation: np.ndarray, translation: np.ndarray | None = None) -> Structure:
        """The structure rotated by ``rotation`` (3×3, acting on column vectors) and translated.

        Positions become ``R r + t``; lattice vectors ``R a``. Used by equivariance tests and
        data augmentation.
        """
        rot = np.asarray(rotation, dtype=np.float64)
        t = np.zeros(3) if translation is None else np.asarray(translation, dtype=np.float64)
        return Structure(
            self.numbers.copy(),
            self.positions @ rot.T + t,
            self.cell @ rot.T,
            self.pbc.copy(),
        )


def validate_structure(structure: Structure, *, min_distance: float = MIN_DISTANCE) -> None:
    """Raise `StructureError` naming the first offending field or atom."""
    numbers, positions, cell, pbc = (
        structure.numbers,
        structure.positions,
        structure.cell,
        structure.pbc,
    )
    if numbers.shape[0] == 0:
        raise StructureError("numbers: structure has no atoms")
    bad = np.flatnonzero((numbers < 1) | (numbers > MAX_ATOMIC_NUMBER))
    if bad.size:
        a = int(bad[0])
        raise StructureError(f"atom {a}: invalid atomic number {int(numbers[a])}")
    bad = np.flatnonzero(~np.all(np.isfinite(positions), axis=1))
    if bad.size:
        a = int(bad[0])
        raise StructureError(f"atom {a}: position is not finite ({positions[a].tolist()})")
    if not np.all(np.isfinite(cell)):
        raise StructureError("cell: contains NaN or inf")
    far = np.flatnonzero(np.abs(positions).max(axis=1) > MAX_COORDINATE)
    if far.size:
        a = int(far[0])
        raise StructureError(
            f"atom {a}: position {positions[a].tolist()} is beyond ±{MAX_COORDINATE:g} Å"
        )
    if np.abs(cell).max() > MAX_COORDINATE:
        raise StructureError(f"cell: a lattice vector component is beyond ±{MAX_COORDINATE:g} Å")
    if np.any(pbc):
        periodic = cell[pbc]
        lengths = np.linalg.norm(periodic, axis=1)
        if (
            np.any(lengths < 1e-6)
            or np.linalg.matrix_rank(periodic, tol=1e-6 * max(1.0, lengths.max()))
            < periodic.shape[0]
        ):
            axes = "".join("xyz"[k] for k in np.flatnonzero(pbc))
            raise StructureError(f"cell: singular along periodic axes ({axes})")
        if pbc.sum() < 3 and np.linalg.matrix_rank(cell, tol=1e-6) < 3:
            # partly periodic with a degenerate non-periodic vector: fine for the graph,
            # which only uses the periodic vectors.
            pass
    _check_close_contacts(structure, min_distance)


def _check_close_contacts(structure: Structure, min_distance: float) -> None:
    """Raise on the first pair closer than ``min_distance``.

    The neighbour list is searched within `CONTACT_SEARCH_RADIUS` (or ``min_distance`` if
    larger) and filtered: a cell list's cells are about as wide as its cutoff, so a 0.1 Å
    search of a molecule in its 6 Å box walks ~2e5 cells (6.4 ms for butanol, most of a
    request's host time in the service) where a 1 Å search walks ~200 (0.25 ms).
    """
    from gears_h_core.graph.neighbors import neighbor_pairs

    i, j, _, dist = neighbor_pairs(structure, max(min_distance, CONTACT_SEARCH_RADIUS))
    close = dist <= min_distance
    if np.any(close):
        k = int(np.flatnonzero(close)[0])
        a, b = sorted((int(i[k]), int(j[k])))
        what = "its own periodic image" if a == b else f"atom {b}"
        raise StructureError(
            f"atom {a}: closer than {min_distance} Å to {what} (distance {float(dist[k]):.4f} Å)"
        )
