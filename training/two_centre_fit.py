"""Least-squares fit of the two-centre terms (`gears_h_core.model.two_centre`).

For one ordered species pair and one irrep slot of degree l, the term is
x_m(r) = Σ_n c_n B_n(|r|) Y_l,m(r̂), linear in c. Over the training pairs p of that kind the
normal equations are

    Σ_p B_p B_pᵀ Σ_m Y_l,m(r̂_p)² · c = Σ_p B_p Σ_m Y_l,m(r̂_p) y_p,m,

and with component-normalised harmonics Σ_m Y_l,m² = 2l + 1 for every direction, so one
Gram matrix per kind serves all its slots. The targets y are the scaled layout irreps the
term predicts (targets / per-slot scale).

The ridge (1e-5 of the mean diagonal of each Gram matrix) keeps unused basis functions at 0
and the coefficients small. Near r = 0 the Bessel functions are nearly collinear, and an
unregularised fit combines them with large cancelling coefficients (|c| up to 60 on the
default model's data), whose float32 round-off (≈ eps · Σ_n |c_n B_n|) broke the 1e-5
equivariance tolerance of the trained model. 1e-5 cuts |c| 10× (the round-off 5×) at no
measurable cost: H baseline 20.56 → 20.58 meV, S 3.76e-5 → 3.79e-5 MAE on the default
model's validation pairs (1e-3 would cost S 30 %).

The fitted coefficients are the exact minimum of the training loss of S and the best
two-centre approximation of the H hoppings; the training loop keeps them fixed
(`frozen_labels`) and trains the network on the remainder. An overlap of atom-centred
orbitals is purely two-centre (PySCF: butanol's S fits to 1e-5), but GPAW's PAW overlap
S = <φ|φ> + Σ_a <φ|p̃^a> ΔS^a <p̃^a|φ> has three-centre projector terms: on h-BN the fit
stays at 5.6e-5 MAE whether it has 16, 32 or 48 basis functions and whatever the ridge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gears_h_core.model.config import ModelConfig
from gears_h_core.model.layout import OutputLayout
from gears_h_core.model.radial import radial_basis, safe_norm
from gears_h_core.model.scale_shift import Statistics
from gears_h_core.model.two_centre import (
    HOPPING_TERM,
    ONSITE_FIELD_TERM,
    ONSITE_S_FIELD_TERM,
    OVERLAP_TERM,
    TwoCentreLayout,
)
from training.data.targets import TrainingExample

RIDGE = 1e-5  # relative to the mean diagonal of each Gram matrix (see the module docstring)


class _NormalEquations:
    def __init__(self, n_kinds: int, n_basis: int, n_slots: int) -> None:
        self.gram = np.zeros((n_kinds, n_basis, n_basis))
        self.rhs = np.zeros((n_kinds, n_basis, n_slots))

    def add(self, kind: np.ndarray, basis: np.ndarray, projected: np.ndarray) -> None:
        for k in np.unique(kind):
            sel = kind == k
            self.gram[k] += basis[sel].T @ basis[sel]
            self.rhs[k] += basis[sel].T @ projected[sel]

    def solve(self, tc: TwoCentreLayout) -> np.ndarray:
        """Coefficients ``[n_kinds, n_basis, n_slots]`` (float32)."""
        n_kinds, n_basis, n_slots = self.rhs.shape
        out = np.zeros((n_kinds, n_basis, n_slots))
        eye = np.eye(n_basis)
        for k in range(n_kinds):
            g = self.gram[k]
            if not np.any(g):
                continue
            ridge = RIDGE * np.trace(g) / n_basis
            for ell in np.unique(tc.slot_l):
                slots = np.flatnonzero((tc.slot_l == ell) & tc.slot_natural)
                if slots.size:
                    a = (2 * ell + 1) * g + ridge * eye
                    out[k][:, slots] = np.linalg.solve(a, self.rhs[k][:, slots])
        return out.astype(np.float32)


def _project(tc: TwoCentreLayout, harmonics: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Σ_m Y_l,m y_m per slot: ``[n, dim] -> [n, n_slots]``."""
    out = np.zeros((y.shape[0], tc.n_slots))
    np.add.at(out.T, tc.component_slot, (harmonics[:, tc.component_sh] * y).T)
    return out


def geometry_rows(
    tc: TwoCentreLayout, n_basis: int
) -> Callable[[np.ndarray, np.ndarray | float], tuple[np.ndarray, np.ndarray]]:
    """``(vectors [n, 3], cutoff per row) -> (basis [n, n_basis], harmonics [n, (lmax+1)²])``
    in float64: the geometry both least-squares fits need, computed as the model does (one
    jitted function; rows padded to a power of two, so a few compilations, not one per
    row count)."""

    @jax.jit
    def geometry(vec: jax.Array, cutoff: jax.Array) -> tuple[jax.Array, jax.Array]:
        return radial_basis(safe_norm(vec), cutoff, n_basis), tc.harmonics(vec)

    def rows(vectors: np.ndarray, cutoff: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        n = len(vectors)
        size = max(1024, 1 << (n - 1).bit_length())
        vec = np.zeros((size, 3), np.float32)
        vec[:n] = vectors
        cut = np.ones(size, np.float64)
        cut[:n] = cutoff
        basis, harmonics = jax.device_get(geometry(jnp.asarray(vec), jnp.asarray(cut)))
        return np.asarray(basis[:n], np.float64), np.asarray(harmonics[:n], np.float64)

    return rows


def fit_two_centre(
    examples: Sequence[TrainingExample],
    layout: OutputLayout,
    stats: Statistics,
    config: ModelConfig,
) -> dict[str, np.ndarray]:
    """Least-squares coefficients of the H hopping term and (where the examples have S)
    of the overlap term: ``{module name: [n_kinds, n_basis, n_slots]}``."""
    tc = TwoCentreLayout.create(layout.hopping_irreps)
    n_kinds, n_basis = layout.n_species_pairs, config.two_centre_basis
    cutoff_table = np.asarray(stats.pair_cutoff, np.float64)
    h_scale = np.asarray(stats.hopping_scale, np.float64)
    s_scale = np.asarray(stats.overlap_scale, np.float64)

    geometry = geometry_rows(tc, n_basis)
    eq_h = _NormalEquations(n_kinds, n_basis, tc.n_slots)
    eq_s = _NormalEquations(n_kinds, n_basis, tc.n_slots)
    has_s = False
    for ex in examples:
        g = ex.graph
        if g.n_pairs == 0:
            continue
        kind = layout.pair_kinds(g.structure.numbers, g.pair_i, g.pair_j)
        basis, harmonics = geometry(g.pair_vec, cutoff_table[kind])

        def scaled(y: np.ndarray, scale: np.ndarray) -> np.ndarray:
            s = scale[kind]  # noqa: B023 - used within this iteration only
            return np.where(s > 0, y / np.where(s > 0, s, 1.0), 0.0)

        eq_h.add(kind, basis, _project(tc, harmonics, scaled(ex.hopping_h, h_scale)))
        if ex.hopping_s is not None and config.predict_overlap:
            has_s = True
            eq_s.add(kind, basis, _project(tc, harmonics, scaled(ex.hopping_s, s_scale)))
    out = {HOPPING_TERM: eq_h.solve(tc)}
    if has_s:
        out[OVERLAP_TERM] = eq_s.solve(tc)
    return out


def with_two_centre(params: Any, fitted: dict[str, np.ndarray]) -> Any:
    """``params`` with the fitted coefficients in place (a new tree; others untouched)."""
    inner = dict(params["params"])
    for name, coefficients in fitted.items():
        if name in inner:
            inner[name] = {"coefficients": jnp.asarray(coefficients)}
    return {**params, "params": inner}


def frozen_labels(params: Any) -> Any:
    """``"frozen"`` for the least-squares coefficients (two-centre terms and the on-site
    crystal fields), ``"trained"`` for all else (a tree
    of labels for ``optax.multi_transform``)."""

    def label(path: tuple[Any, ...], _: Any) -> str:
        names = {getattr(k, "key", None) for k in path}
        fitted = {HOPPING_TERM, OVERLAP_TERM, ONSITE_FIELD_TERM, ONSITE_S_FIELD_TERM}
        return "frozen" if names & fitted else "trained"

    return jax.tree_util.tree_map_with_path(label, params)
