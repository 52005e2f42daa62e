"""Orbital basis per species: shell angular momenta in basis order, orbital counts, offsets.

The basis of an element is the list of the angular momenta ``l`` of its radial functions in
basis order (``orbital_ells.json`` of a snapshot folder: ``{"74": [0, 2, 1]}``). Each shell
contributes ``2l + 1`` orbitals ordered as in `gears_h_core.basis.conventions` (GPAW order).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_L = 3


class BasisError(ValueError):
    """An orbital basis that is malformed or does not cover a structure."""


@dataclass(frozen=True)
class OrbitalBasis:
    """Shell angular momenta per atomic number.

    Attributes:
        shells: mapping atomic number -> tuple of shell ``l`` in basis order.
    """

    shells: Mapping[int, tuple[int, ...]]

    def __post_init__(self) -> None:
        clean: dict[int, tuple[int, ...]] = {}
        for z, ells in self.shells.items():
            zi = int(z)
            if not 1 <= zi <= 118:
                raise BasisError(f"basis: invalid atomic number {z!r}")
            ls = tuple(int(ell) for ell in ells)
            if not ls:
                raise BasisError(f"basis: element {zi} has no shells")
            if any(ell < 0 or ell > MAX_L for ell in ls):
                raise BasisError(f"basis: element {zi} has a shell with l outside 0..{MAX_L}: {ls}")
            clean[zi] = ls
        object.__setattr__(self, "shells", dict(sorted(clean.items())))

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Iterable[int]]) -> OrbitalBasis:
        try:
            return cls({int(z): tuple(ls) for z, ls in data.items()})
        except (TypeError, ValueError) as exc:
            if isinstance(exc, BasisError):
                raise
            raise BasisError(f"basis: malformed shell lists: {exc}") from exc

    @classmethod
    def from_file(cls, path: str | Path) -> OrbitalBasis:
        """Read an ``orbital_ells.json`` file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BasisError(f"{path}: cannot read orbital shells: {exc}") from exc
        if not isinstance(data, dict):
            raise BasisError(f'{path}: expected a JSON object {{"Z": [l, ...]}}')
        try:
            return cls.from_json_dict(data)
        except BasisError as exc:
            raise BasisError(f"{path}: {exc}") from exc

    def to_json_dict(self) -> dict[str, list[int]]:
        return {str(z): list(ls) for z, ls in self.shells.items()}

    @property
    def species(self) -> tuple[int, ...]:
        return tuple(self.shells)

    def n_orb(self, z: int) -> int:
        """Number of orbitals of one atom of element ``z``."""
        try:
            return sum(2 * ell + 1 for ell in self.shells[int(z)])
        except KeyError:
            raise BasisError(f"basis: no orbitals for element {int(z)}") from None

    def orbital_counts(self, numbers: np.ndarray) -> np.ndarray:
        """Orbitals per atom, int64 ``[n_atoms]``."""
        missing = sorted(set(int(z) for z in np.unique(numbers)) - set(self.shells))
        if missing:
            raise BasisError(f"basis: no orbitals for element(s) {missing}")
        table = np.zeros(max(self.shells) + 1, dtype=np.int64)
        for z in self.shells:
            table[z] = self.n_orb(z)
        return table[np.asarray(numbers)]

    def orbital_offsets(self, numbers: np.ndarray) -> np.ndarray:
        """First orbital index of every atom plus the total, int64 ``[n_atoms + 1]``."""
        counts = self.orbital_counts(numbers)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def restricted_to(self, species: Iterable[int]) -> OrbitalBasis:
        return OrbitalBasis({int(z): self.shells[int(z)] for z in species})
