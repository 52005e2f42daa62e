"""Containers passed between stages.

Host-side containers (numpy) are frozen dataclasses; device-side containers (jax arrays that
go through `jit`) are `flax.struct` dataclasses. Axis names used everywhere: ``n_atoms``,
``n_edges`` (interaction edges), ``n_pairs`` (hopping pairs), ``n_graphs``, ``n_orb``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.structure import Structure


@dataclass(frozen=True, eq=False)
class OnsiteGroup:
    """On-site blocks of all atoms of one element.

    Attributes:
        z: atomic number.
        atoms: atom indices, int32 ``[n]``.
        blocks: float32 ``[n, n_orb, n_orb]`` (H_aa(T=0) or S_aa(T=0)).
    """

    z: int
    atoms: np.ndarray
    blocks: np.ndarray


@dataclass(frozen=True, eq=False)
class HoppingGroup:
    """Hopping blocks H_ij(T) of all pairs of one ordered species pair (z_i, z_j).

    Attributes:
        z_i, z_j: atomic numbers of the home-cell atom i and the translated atom j.
        i, j: atom indices, int32 ``[n]``.
        shift: integer lattice shift n of atom j (T = n · cell), int32 ``[n, 3]``.
        blocks: float32 ``[n, n_orb_i, n_orb_j]``.
    """

    z_i: int
    z_j: int
    i: np.ndarray
    j: np.ndarray
    shift: np.ndarray
    blocks: np.ndarray


@dataclass(frozen=True, eq=False)
class BlockMatrix:
    """A real-space operator (H or S) as sparse atom-pair blocks with lattice shifts.

    Block-COO, grouped by species (pair) so that every group is one dense array.
    """

    onsite: tuple[OnsiteGroup, ...]
    hopping: tuple[HoppingGroup, ...] = field(default_factory=tuple)

    @property
    def n_pairs(self) -> int:
        return sum(int(g.i.shape[0]) for g in self.hopping)


@dataclass(frozen=True, eq=False)
class SparseHamiltonian:
    """H (and optionally S) of one structure as sparse atom-pair blocks with lattice shifts.

    Attributes:
        structure: the structure the blocks belong to (`gears_h_core.structure.Structure`).
        basis: the orbital basis (`gears_h_core.basis.orbitals.OrbitalBasis`).
        H: Hamiltonian blocks in eV.
        S: overlap blocks (dimensionless) or None.
    """

    structure: Structure
    basis: OrbitalBasis
    H: BlockMatrix
    S: BlockMatrix | None = None


@dataclass(frozen=True, eq=False)
class NeighborGraph:
    """Host-side neighbour graph of one structure.

    Two directed lists over the same atoms, each with integer lattice shifts ``n`` (atom j
    translated by T = n · cell) and the vector D = r_j + T − r_i (float64, Å):

    * interaction edges (message passing), cutoff ``edge_cutoff``: ``edge_i`` (receiver,
      home cell), ``edge_j`` (sender), ``edge_shift`` int32 ``[n_edges, 3]``, ``edge_vec``
      float64 ``[n_edges, 3]``;
    * hopping pairs (off-site blocks), per-species-pair cutoffs: ``pair_i``, ``pair_j``,
      ``pair_shift`` ``[n_pairs, 3]``, ``pair_vec`` ``[n_pairs, 3]``.

    Both directions of every pair are present; the self pair (i, i, 0) never is. Periodic
    self-images (i, i, n != 0) are kept. Several images of the same (i, j) are distinct pairs.
    """

    structure: Structure
    edge_i: np.ndarray
    edge_j: np.ndarray
    edge_shift: np.ndarray
    edge_vec: np.ndarray
    pair_i: np.ndarray
    pair_j: np.ndarray
    pair_shift: np.ndarray
    pair_vec: np.ndarray

    @property
    def n_atoms(self) -> int:
        return self.structure.n_atoms

    @property
    def n_edges(self) -> int:
        return int(self.edge_i.shape[0])

    @property
    def n_pairs(self) -> int:
        return int(self.pair_i.shape[0])
