"""Per-species(-pair), per-channel statistics the network output is scaled and shifted by.

Computed by ``gears_h analyze`` from training data in the universal irreps layout and stored
in the model bundle. Scales are per irrep slot (the same for the 2l+1 components of one
irrep, so equivariance is kept); shifts only on even scalars (0e) of on-site blocks.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import struct


@struct.dataclass
class Statistics:
    """Attributes (float32):
    onsite_shift, onsite_scale: ``[n_species, onsite_dim]``;
    hopping_scale: ``[n_species**2, hopping_dim]``;
    overlap_onsite: ``[n_species, onsite_dim]`` (constant on-site S in irreps);
    overlap_scale: ``[n_species**2, hopping_dim]``;
    pair_cutoff: hopping cutoff per ordered species pair, Å, ``[n_species**2]``.
    """

    onsite_shift: jax.Array | np.ndarray
    onsite_scale: jax.Array | np.ndarray
    hopping_scale: jax.Array | np.ndarray
    overlap_onsite: jax.Array | np.ndarray
    overlap_scale: jax.Array | np.ndarray
    pair_cutoff: jax.Array | np.ndarray

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(getattr(self, k), np.float32) for k in self.__dataclass_fields__}

    @classmethod
    def from_numpy(cls, data: dict[str, np.ndarray]) -> Statistics:
        return cls(**{k: np.asarray(data[k], np.float32) for k in cls.__dataclass_fields__})
