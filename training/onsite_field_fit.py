"""Least-squares fit of the on-site crystal-field term (`gears_h_core.model.two_centre`).

The term adds to the on-site irreps of atom i a sum over its interaction neighbours j,

    x_i,slot = Σ_j Σ_n c[kind(i, j), n, slot] B_n(r_ij) Y_l(r̂_ij),

so it is linear in c. For a centre species a and a slot of degree l, the unknowns are
c[(a, b), n, slot] over neighbour species b and basis functions n, and the features of atom i
(of species a) are

    F_i[(b, n), m] = Σ_{j of species b} B_n(r_ij) Y_l,m(r̂_ij).

The normal equations Σ_i Σ_m F_i[:, m] F_i[:, m]ᵀ · c = Σ_i Σ_m F_i[:, m] y_i,slot,m share one
Gram matrix per (centre species, l) across that degree's slots. Targets are the scaled on-site
irreps (targets − shift) / scale, what the term predicts before the model scales and shifts;
for the overlap field (``overlap=True``) the on-site S irreps minus the per-species constant,
unscaled (the model adds the field to that constant as it is).
The same relative ridge as the two-centre hopping fit (`training.two_centre_fit.RIDGE`) keeps
the coefficients small (float32 round-off) and unused basis functions at zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gears_h_core.model.config import ModelConfig
from gears_h_core.model.layout import OutputLayout
from gears_h_core.model.scale_shift import Statistics
from gears_h_core.model.two_centre import TwoCentreLayout
from training.data.targets import TrainingExample
from training.two_centre_fit import RIDGE, geometry_rows


def fit_onsite_field(
    examples: Sequence[TrainingExample],
    layout: OutputLayout,
    stats: Statistics,
    config: ModelConfig,
    *,
    overlap: bool = False,
) -> np.ndarray:
    """Least-squares coefficients ``[n_species², n_basis, n_onsite_slots]`` (float32) of the
    H field, or with ``overlap`` of the S field (examples without S are skipped)."""
    key = "s" if overlap else "h"
    return fit_onsite_fields(examples, layout, stats, config, targets=(key,))[key]


def fit_onsite_fields(
    examples: Sequence[TrainingExample],
    layout: OutputLayout,
    stats: Statistics,
    config: ModelConfig,
    *,
    targets: Sequence[str] = ("h", "s"),
) -> dict[str, np.ndarray]:
    """The H field (``"h"``) and/or the S field (``"s"``) in one pass over the examples.

    The features of an atom do not depend on the target, so they are built once per example
    and fill the normal equations of every target that example has (S may be missing).
    """
    tc = TwoCentreLayout.create(layout.onsite_irreps)
    n_sp, n_basis = layout.n_species, config.onsite_field_basis
    ells = np.unique(tc.slot_l[tc.slot_natural])
    n_feat = n_sp * n_basis
    gram = {t: np.zeros((n_sp, len(ells), n_feat, n_feat)) for t in targets}
    rhs = {t: np.zeros((n_sp, n_feat, tc.n_slots)) for t in targets}
    shift = {
        "h": np.asarray(stats.onsite_shift, np.float64),
        "s": np.asarray(stats.overlap_onsite, np.float64),
    }
    scale = {"h": np.asarray(stats.onsite_scale, np.float64), "s": np.ones_like(shift["s"])}
    # components of every slot, [n_slots, 2l + 1] per degree
    slot_components = {
        ell: np.stack(
            [np.flatnonzero(tc.component_slot == s) for s in np.flatnonzero(tc.slot_l == ell)]
        )
        for ell in ells
    }

    geometry = geometry_rows(tc, n_basis)
    for ex in examples:
        g = ex.graph
        present = {"h": ex.onsite_h, "s": ex.onsite_s}
        wanted = [t for t in targets if present[t] is not None]
        if g.n_edges == 0 or not wanted:
            continue
        species = layout.species_table[g.structure.numbers]
        basis, harmonics = geometry(g.edge_vec, config.edge_cutoff)
        y = {}
        for t in wanted:
            s = scale[t][species]
            y[t] = np.where(s > 0, (present[t] - shift[t][species]) / np.where(s > 0, s, 1.0), 0.0)
        # feature rows (b, n) of every edge: the neighbour species picks the block of n
        spread = np.zeros((g.n_edges, n_sp, n_basis))
        spread[np.arange(g.n_edges), species[g.edge_j]] = basis
        spread = spread.reshape(g.n_edges, n_feat)
        for li, ell in enumerate(ells):
            y_lm = harmonics[:, ell**2 : (ell + 1) ** 2]  # [E, 2l + 1]
            feats = np.zeros((g.n_atoms, n_feat, 2 * ell + 1))
            np.add.at(feats, g.edge_i, spread[:, :, None] * y_lm[:, None, :])
            comps = slot_components[ell]  # [n_slots_l, 2l + 1]
            slots = np.flatnonzero(tc.slot_l == ell)
            for a in np.unique(species):
                f = feats[species == a]
                ff = np.einsum("ipm,iqm->pq", f, f)
                for t in wanted:
                    gram[t][a, li] += ff
                    rhs[t][a][:, slots] += np.einsum("ipm,ism->ps", f, y[t][species == a][:, comps])
    return {t: _solve(gram[t], rhs[t], tc, ells, n_basis) for t in targets}


def _solve(
    gram: np.ndarray, rhs: np.ndarray, tc: TwoCentreLayout, ells: np.ndarray, n_basis: int
) -> np.ndarray:
    n_sp, n_feat = gram.shape[0], gram.shape[-1]
    out = np.zeros((n_sp, n_sp, n_basis, tc.n_slots))
    eye = np.eye(n_feat)
    for a in range(n_sp):
        for li, ell in enumerate(ells):
            g_al = gram[a, li]
            if not np.any(g_al):
                continue
            slots = np.flatnonzero((tc.slot_l == ell) & tc.slot_natural)
            ridge = RIDGE * np.trace(g_al) / n_feat
            sol = np.linalg.solve(g_al + ridge * eye, rhs[a][:, slots])  # [n_feat, n_slots_l]
            out[a][:, :, slots] = sol.reshape(n_sp, n_basis, -1)
    # kind = species_i · n_species + species_j
    return out.reshape(n_sp * n_sp, n_basis, tc.n_slots).astype(np.float32)
