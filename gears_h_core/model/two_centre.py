"""Two-centre terms: blocks that depend on the pair vector r_ij and the species pair only.

An overlap block S_ij(T) of numerical atomic orbitals is exactly such a two-centre
integral, and the largest part of a hopping block H_ij(T) is one (Slater–Koster). Its
universal-layout irreps are, slot by slot (an irrep slot of type (l, p) in the hopping
layout),

    x_slot(r) = f_kind,slot(|r|) · Y_l(r̂)      if p = (-1)^l (natural parity), else 0,

(a two-centre integral has no unnatural-parity part), with one radial function per ordered
species pair and slot, expanded in the pair's Bessel basis (smooth cutoff at the pair's own
range): f = Σ_n c_kind,slot,n B_n(|r| / r_c,kind).

The term is linear in its coefficients, so `training.two_centre_fit` sets them by least
squares (the exact optimum over the training set) before training; the network then learns
only what the environment adds.

The same form in the on-site layout, summed over an atom's interaction neighbours, is the
on-site crystal field (`HamiltonianModel` with ``onsite_field_basis > 0``, fitted by
`training.onsite_field_fit`): the potential of neighbour j acting on atom i's own orbitals,
⟨φ_i|V_j|φ_i'⟩, is a two-centre function of r_ij.
"""

from __future__ import annotations

from dataclasses import dataclass

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

#: parameter names of the model's least-squares terms (`training.two_centre_fit` and
#: `training.onsite_field_fit` fit them before training and keep them frozen)
HOPPING_TERM = "hopping_two_centre"
OVERLAP_TERM = "overlap_two_centre"
ONSITE_FIELD_TERM = "onsite_field"  # on-site H crystal field
ONSITE_S_FIELD_TERM = "onsite_s_field"  # on-site S crystal field


@dataclass(frozen=True)
class TwoCentreLayout:
    """Where every component of the hopping layout takes its harmonic from.

    Attributes:
        lmax: largest l of the layout (the harmonics go up to it).
        slot_l: l of every irrep slot, int ``[n_slots]``.
        slot_natural: whether a slot has natural parity, bool ``[n_slots]``.
        component_slot: slot of every layout component, int ``[dim]``.
        component_sh: index of its harmonic Y_l,m in the harmonics 0..lmax, int ``[dim]``.
    """

    lmax: int
    slot_l: np.ndarray
    slot_natural: np.ndarray
    component_slot: np.ndarray
    component_sh: np.ndarray

    @classmethod
    def create(cls, irreps: e3nn.Irreps) -> TwoCentreLayout:
        lmax = max(ir.l for _, ir in irreps)
        slot_l, natural, comp_slot, comp_sh = [], [], [], []
        for mul, ir in irreps:
            for _ in range(mul):
                s = len(slot_l)
                slot_l.append(ir.l)
                natural.append(ir.p == (-1) ** ir.l)
                comp_slot.extend([s] * ir.dim)
                comp_sh.extend(range(ir.l**2, ir.l**2 + ir.dim))
        return cls(
            lmax=lmax,
            slot_l=np.asarray(slot_l, np.int64),
            slot_natural=np.asarray(natural, bool),
            component_slot=np.asarray(comp_slot, np.int64),
            component_sh=np.asarray(comp_sh, np.int64),
        )

    @property
    def n_slots(self) -> int:
        return int(self.slot_l.shape[0])

    def harmonics(self, vectors: jax.Array) -> jax.Array:
        """Component-normalised Y_0..Y_lmax of the pair vectors, ``[n, (lmax + 1)²]``
        (a zero vector gets the harmonics of ẑ; its basis is zero anyway)."""
        r2 = jnp.sum(vectors**2, axis=-1, keepdims=True)
        safe = jnp.where(r2 > 1e-24, vectors, jnp.array([0.0, 0.0, 1.0], vectors.dtype))
        return e3nn.spherical_harmonics(
            e3nn.Irreps.spherical_harmonics(self.lmax),
            safe,
            normalize=True,
            normalization="component",
        ).array

    def expand(self, radial: jax.Array, harmonics: jax.Array) -> jax.Array:
        """Layout irreps from slot radial values ``[n, n_slots]`` and harmonics."""
        natural = jnp.asarray(self.slot_natural, radial.dtype)
        return (radial * natural)[:, self.component_slot] * harmonics[:, self.component_sh]


class TwoCentre(nn.Module):
    """Σ_n c[kind, n, slot] B_n(r) · Y_l(r̂) per slot, in the layout of ``out_irreps``
    (hopping, or on-site for the crystal field; unscaled).

    The coefficients start at zero; `training.two_centre_fit` sets them. Every kind uses
    its own coefficients: the basis values are spread into ``n_kinds`` one-hot copies and
    mapped by one matrix product (no per-pair gather of a coefficient matrix).
    """

    out_irreps: e3nn.Irreps
    n_kinds: int
    n_basis: int

    @nn.compact
    def __call__(
        self,
        kind: jax.Array,  # [n_pairs] ordered species-pair index
        basis: jax.Array,  # [n_pairs, n_basis], zero beyond the cutoff and on padding
        harmonics: jax.Array,  # [n_pairs, (lmax + 1)²]
    ) -> jax.Array:
        layout = TwoCentreLayout.create(self.out_irreps)
        coefficients = self.param(
            "coefficients", nn.initializers.zeros, (self.n_kinds, self.n_basis, layout.n_slots)
        )
        onehot = jax.nn.one_hot(kind, self.n_kinds, dtype=basis.dtype)
        spread = (onehot[:, :, None] * basis[:, None, :]).reshape(basis.shape[0], -1)
        radial = spread @ coefficients.reshape(-1, layout.n_slots).astype(basis.dtype)
        return layout.expand(radial, harmonics)
