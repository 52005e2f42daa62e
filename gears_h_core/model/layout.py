"""The model's output layout: one "universal" irreps vector per atom and per pair.

Every species (on-site) and every ordered species pair (hopping) has its own block shape and
so its own irreps (`gears_h_core.basis.irreps.block_irreps`). The network outputs, for every
node and every pair, one vector in a *universal* irreps that holds, for every irrep type
(l, parity), the largest multiplicity any species (pair) needs. A species (pair) uses the
first slots of each type, in the order of its own irreps; the rest are unused (masked).

Because the change of basis block -> irreps is orthogonal, squared errors in this layout
equal squared errors of the orbital blocks (what users measure).

The layout also carries the *transpose tables*: the irreps of Bᵀ, for B a block of pair type
(z_i, z_j), are a signed permutation of the irreps of B. They let the network symmetrise
its output so that H_ji(−T) = H_ij(T)ᵀ and on-site blocks are symmetric by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import e3nn_jax as e3nn
import numpy as np

from gears_h_core.basis.irreps import BlockIrreps, block_irreps
from gears_h_core.basis.orbitals import OrbitalBasis


def _universal(all_irreps: list[e3nn.Irreps]) -> e3nn.Irreps:
    mult: dict[e3nn.Irrep, int] = {}
    for irreps in all_irreps:
        count: dict[e3nn.Irrep, int] = {}
        for mul, ir in irreps:
            count[ir] = count.get(ir, 0) + mul
        for ir, n in count.items():
            mult[ir] = max(mult.get(ir, 0), n)
    return e3nn.Irreps([(mult[ir], ir) for ir in sorted(mult)])


def _slot_index(irreps: e3nn.Irreps, universal: e3nn.Irreps) -> np.ndarray:
    """Positions in ``universal`` of every component of ``irreps`` (int64 ``[irreps.dim]``)."""
    start: dict[e3nn.Irrep, int] = {}
    offset = 0
    for mul, ir in universal:
        start[ir] = offset
        offset += mul * ir.dim
    used: dict[e3nn.Irrep, int] = {}
    index = []
    for mul, ir in irreps:
        for _ in range(mul):
            k = used.get(ir, 0)
            used[ir] = k + 1
            base = start[ir] + k * ir.dim
            index.extend(range(base, base + ir.dim))
    return np.asarray(index, dtype=np.int64)


def _transpose_map(bi_ij: BlockIrreps, bi_ji: BlockIrreps) -> np.ndarray:
    """Matrix M with irreps(Bᵀ) = M · irreps(B) for blocks B of the (i, j) type."""
    n_i, n_j = bi_ij.n_i, bi_ij.n_j
    perm = np.arange(n_i * n_j).reshape(n_i, n_j).T.reshape(-1)  # vec(Bᵀ) = vec(B)[perm]
    return bi_ji.matrix.T @ bi_ij.matrix[perm]


def pair_kind(species: Any, pair_i: Any, pair_j: Any, n_species: int) -> Any:
    """Ordered species-pair index ``species[i] · n_species + species[j]`` of every pair, the
    row of every per-species-pair table (numpy or jax arrays; ``species`` per node)."""
    return species[pair_i] * n_species + species[pair_j]


@dataclass(frozen=True, eq=False)
class OutputLayout:
    """Universal on-site / hopping irreps for a basis and species list.

    Attributes:
        basis: the orbital basis (covers every species).
        species: atomic numbers the model knows, sorted; species index = position here.
    """

    basis: OrbitalBasis
    species: tuple[int, ...]

    @classmethod
    def create(cls, basis: OrbitalBasis, species: tuple[int, ...] | None = None) -> OutputLayout:
        sp = tuple(sorted(basis.species if species is None else species))
        return cls(basis.restricted_to(sp), sp)

    @property
    def n_species(self) -> int:
        return len(self.species)

    @property
    def n_species_pairs(self) -> int:
        return len(self.species) ** 2

    @cached_property
    def species_table(self) -> np.ndarray:
        """Atomic number -> species index, int32 ``[119]`` (0 for elements not in the model)."""
        table = np.zeros(119, dtype=np.int32)
        for s, z in enumerate(self.species):
            table[z] = s
        return table

    def species_index(self, z: int) -> int:
        return self.species.index(int(z))

    def pair_index(self, z_i: int, z_j: int) -> int:
        return self.species_index(z_i) * self.n_species + self.species_index(z_j)

    def pair_kinds(self, numbers: np.ndarray, pair_i: np.ndarray, pair_j: np.ndarray) -> np.ndarray:
        """Ordered species-pair index (`pair_index`) of every pair of a structure (host)."""
        species = self.species_table[np.asarray(numbers)]
        return pair_kind(species, np.asarray(pair_i), np.asarray(pair_j), self.n_species)

    def onsite_block_irreps(self, z: int) -> BlockIrreps:
        ells = self.basis.shells[int(z)]
        return block_irreps(ells, ells)

    def hopping_block_irreps(self, z_i: int, z_j: int) -> BlockIrreps:
        return block_irreps(self.basis.shells[int(z_i)], self.basis.shells[int(z_j)])

    @cached_property
    def onsite_irreps(self) -> e3nn.Irreps:
        return _universal([self.onsite_block_irreps(z).irreps for z in self.species])

    @cached_property
    def hopping_irreps(self) -> e3nn.Irreps:
        return _universal(
            [self.hopping_block_irreps(a, b).irreps for a in self.species for b in self.species]
        )

    @cached_property
    def _onsite_index(self) -> tuple[np.ndarray, ...]:
        return tuple(
            _slot_index(self.onsite_block_irreps(z).irreps, self.onsite_irreps)
            for z in self.species
        )

    @cached_property
    def _hopping_index(self) -> tuple[np.ndarray, ...]:
        return tuple(
            _slot_index(self.hopping_block_irreps(a, b).irreps, self.hopping_irreps)
            for a in self.species
            for b in self.species
        )

    def onsite_index(self, z: int) -> np.ndarray:
        return self._onsite_index[self.species_index(z)]

    def hopping_index(self, z_i: int, z_j: int) -> np.ndarray:
        return self._hopping_index[self.pair_index(z_i, z_j)]

    @cached_property
    def onsite_mask(self) -> np.ndarray:
        """Used channels per species, bool ``[n_species, onsite_irreps.dim]``."""
        mask = np.zeros((self.n_species, self.onsite_irreps.dim), dtype=bool)
        for s, idx in enumerate(self._onsite_index):
            mask[s, idx] = True
        return mask

    @cached_property
    def hopping_mask(self) -> np.ndarray:
        """Used channels per ordered species pair, bool ``[n_species**2, hopping_irreps.dim]``."""
        mask = np.zeros((self.n_species_pairs, self.hopping_irreps.dim), dtype=bool)
        for k, idx in enumerate(self._hopping_index):
            mask[k, idx] = True
        return mask

    def _signed_permutation(self, m: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
        rows = np.argmax(np.abs(m), axis=1)
        sign = np.sign(m[np.arange(m.shape[0]), rows])
        if not np.allclose(np.abs(m).sum(axis=1), 1.0, atol=1e-9) or not np.allclose(
            np.abs(m[np.arange(m.shape[0]), rows]), 1.0, atol=1e-9
        ):
            raise RuntimeError(f"transpose of {where} is not a signed permutation of irreps")
        return rows, sign

    @cached_property
    def onsite_transpose(self) -> tuple[np.ndarray, np.ndarray]:
        """(index, sign), each ``[n_species, onsite_irreps.dim]``: x(Bᵀ)[c] = sign[c] x(B)[index[c]]."""
        dim = self.onsite_irreps.dim
        index = np.zeros((self.n_species, dim), dtype=np.int32)
        sign = np.zeros((self.n_species, dim), dtype=np.float32)
        for s, z in enumerate(self.species):
            bi = self.onsite_block_irreps(z)
            rows, sg = self._signed_permutation(_transpose_map(bi, bi), f"on-site Z={z}")
            idx = self._onsite_index[s]
            index[s, idx] = idx[rows]
            sign[s, idx] = sg
        return index, sign

    @cached_property
    def hopping_transpose(self) -> tuple[np.ndarray, np.ndarray]:
        """(index, sign), each ``[n_species**2, hopping_irreps.dim]``.

        For a pair of type k = (z_i, z_j) whose partner (type (z_j, z_i)) has universal
        vector y, the irreps of the partner's block transposed, in the layout of k, are
        ``sign[k] * y[index[k]]``.
        """
        dim = self.hopping_irreps.dim
        index = np.zeros((self.n_species_pairs, dim), dtype=np.int32)
        sign = np.zeros((self.n_species_pairs, dim), dtype=np.float32)
        for a in self.species:
            for b in self.species:
                k = self.pair_index(a, b)
                bi_ab = self.hopping_block_irreps(a, b)
                bi_ba = self.hopping_block_irreps(b, a)
                # irreps(B_abᵀ-as-(b,a)) ... we need: partner block C (type (b,a)); Cᵀ has type (a,b)
                m = _transpose_map(bi_ba, bi_ab)
                rows, sg = self._signed_permutation(m, f"hopping Z=({a},{b})")
                idx_ab = self._hopping_index[k]
                idx_ba = self._hopping_index[self.pair_index(b, a)]
                index[k, idx_ab] = idx_ba[rows]
                sign[k, idx_ab] = sg
        return index, sign

    # -- host-side conversion between blocks and the universal layout ---------------------

    def encode_onsite(self, z: int, blocks: np.ndarray) -> np.ndarray:
        """``[n, n_orb, n_orb]`` blocks -> ``[n, onsite_irreps.dim]`` float32."""
        bi = self.onsite_block_irreps(z)
        out = np.zeros((blocks.shape[0], self.onsite_irreps.dim), dtype=np.float32)
        out[:, self.onsite_index(z)] = bi.block_to_irreps(np.asarray(blocks, np.float64))
        return out

    def encode_hopping(self, z_i: int, z_j: int, blocks: np.ndarray) -> np.ndarray:
        """``[n, n_orb_i, n_orb_j]`` blocks -> ``[n, hopping_irreps.dim]`` float32."""
        bi = self.hopping_block_irreps(z_i, z_j)
        out = np.zeros((blocks.shape[0], self.hopping_irreps.dim), dtype=np.float32)
        out[:, self.hopping_index(z_i, z_j)] = bi.block_to_irreps(np.asarray(blocks, np.float64))
        return out

    @cached_property
    def _decoders(self) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray, int, int]]:
        """Per ordered species pair (on-site: ``(z, z)`` under key ``(-z, -z)``): the used
        channels, the float32 change of basis ``Uᵀ`` (contiguous, ``[used, n_i·n_j]``) and the
        block shape, so that decoding a slice of rows is one gather and one matrix product."""
        out: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, int, int]] = {}
        for a in self.species:
            bi = self.onsite_block_irreps(a)
            ut = np.ascontiguousarray(bi.matrix.T.astype(np.float32))
            out[(-a, -a)] = (self.onsite_index(a), ut, bi.n_i, bi.n_j)
            for b in self.species:
                bi = self.hopping_block_irreps(a, b)
                ut = np.ascontiguousarray(bi.matrix.T.astype(np.float32))
                out[(a, b)] = (self.hopping_index(a, b), ut, bi.n_i, bi.n_j)
        return out

    def _decode(self, key: tuple[int, int], x: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        index, ut, n_i, n_j = self._decoders[key]
        x = np.asarray(x, np.float32)
        used = x[:, index] if rows is None else x[np.ix_(rows, index)]
        return (used @ ut).reshape(used.shape[0], n_i, n_j)

    def decode_onsite(self, z: int, x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``[n, onsite_irreps.dim]`` -> symmetric ``[n, n_orb, n_orb]`` float32 blocks (of
        the rows ``rows`` of ``x`` only, when given)."""
        blocks = self._decode((-int(z), -int(z)), x, rows)
        return 0.5 * (blocks + np.swapaxes(blocks, 1, 2))

    def decode_hopping(
        self, z_i: int, z_j: int, x: np.ndarray, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """``[n, hopping_irreps.dim]`` -> ``[n, n_orb_i, n_orb_j]`` float32 blocks (of the
        rows ``rows`` of ``x`` only, when given)."""
        return self._decode((int(z_i), int(z_j)), x, rows)

    def padded_decoders(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Dense block decoders for device code: ``(onsite [n_species, onsite_dim, n·n],
        hopping [n_species**2, hopping_dim, n·n], n)`` float32, with ``n`` the largest orbital
        count of any species. ``x @ onsite[s]`` is the on-site block of a species-``s`` atom
        (symmetrised, as `decode_onsite`), ``x @ hopping[k]`` the block of a kind-``k`` pair,
        both zero-padded to ``n × n`` (rows and columns beyond the species' orbitals are 0)."""
        n = max(self.basis.n_orb(z) for z in self.species)

        def padded(key: tuple[int, int], dim: int) -> np.ndarray:
            index, ut, n_i, n_j = self._decoders[key]
            out = np.zeros((dim, n, n), np.float32)
            out[index, :n_i, :n_j] = ut.reshape(-1, n_i, n_j)
            return out

        onsite = np.stack([padded((-z, -z), self.onsite_irreps.dim) for z in self.species])
        onsite = 0.5 * (onsite + np.swapaxes(onsite, 2, 3))
        hopping = np.stack(
            [padded((a, b), self.hopping_irreps.dim) for a in self.species for b in self.species]
        )
        return (
            onsite.reshape(len(self.species), -1, n * n),
            hopping.reshape(self.n_species_pairs, -1, n * n),
            n,
        )
