"""Shared asserts for tests of gears_h_core and of code built on it (shipped with the package).

Each assert raises ``AssertionError`` with a readable message; none needs pytest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gears_h_core.basis.conventions import wigner_for_shells
from gears_h_core.model.config import ModelConfig
from gears_h_core.types import BlockMatrix, SparseHamiltonian

if TYPE_CHECKING:  # heavy (e3nn-jax, flax): imported where used
    import e3nn_jax as e3nn

    from gears_h_core.model.layout import OutputLayout
    from gears_h_core.model.scale_shift import Statistics


def assert_blocks_equivariant(
    blocks: np.ndarray,
    rotated_blocks: np.ndarray,
    ells_i: Sequence[int],
    ells_j: Sequence[int],
    R: np.ndarray,
    *,
    rtol: float = 1e-5,
) -> None:
    """Assert ``rotated_blocks == W_i(R) · blocks · W_j(R)ᵀ`` (SPEC §2 equivariance).

    Args:
        blocks: atom-pair blocks of the original structure, ``[..., n_orb_i, n_orb_j]``.
        rotated_blocks: the same blocks for the structure rotated by ``R``, same shape.
        ells_i, ells_j: shell angular momenta of atoms i and j (our GPAW orbital order).
        R: orthogonal ``[3, 3]`` acting on positions (r → R r); improper allowed.
        rtol: tolerance relative to the largest absolute entry of ``blocks`` (1 if all zero).
    """
    blocks = np.asarray(blocks, dtype=np.float64)
    rotated_blocks = np.asarray(rotated_blocks, dtype=np.float64)
    if blocks.shape != rotated_blocks.shape:
        raise AssertionError(f"shapes differ: {blocks.shape} vs {rotated_blocks.shape}")
    w_i = wigner_for_shells(ells_i, R)  # [n_orb_i, n_orb_i]
    w_j = wigner_for_shells(ells_j, R)  # [n_orb_j, n_orb_j]
    expected = w_i @ blocks @ w_j.T
    scale = float(np.max(np.abs(blocks), initial=0.0)) or 1.0
    err = float(np.max(np.abs(rotated_blocks - expected), initial=0.0))
    if err > rtol * scale:
        raise AssertionError(
            f"blocks are not equivariant: max |rotated - W B Wᵀ| = {err:.3e} "
            f"> {rtol:.1e} × block scale {scale:.3e}"
        )


# --------------------------------------------------------------------------------------------
# Random models (tiny configs, non-trivial statistics and parameters) for property tests
# --------------------------------------------------------------------------------------------


def tiny_model_config(**overrides: Any) -> ModelConfig:
    """A small `ModelConfig` (every irrep type up to l = 4, both parities) for fast tests."""
    irreps = "8x0e+4x1o+4x1e+2x2e+2x2o+2x3o+2x3e+2x4e"
    values: dict[str, Any] = {
        "edge_cutoff": 3.0,
        "n_interactions": 2,
        "node_irreps": irreps,
        "pair_irreps": irreps,
        "sh_lmax": 4,
        "n_radial": 4,
        "radial_hidden": 8,
        "species_embedding": 8,
        "overlap_channels": 2,
        "two_centre_basis": 4,
        "onsite_field_basis": 4,
        "avg_num_neighbors": 4.0,
    }
    values.update(overrides)
    return ModelConfig(**values)


def rattled_boron_nitride(seed: int, amplitude: float) -> Any:
    """A 4-atom B/N ribbon cell (periodic in x and y), every atom moved by up to
    ``amplitude`` Å: a small periodic structure with two species and many neighbours."""
    from gears_h_core.structure import Structure

    rng = np.random.default_rng(seed)
    a, d = 2.50, 1.443
    pos = np.array([[0, 0, 0], [0, d, 0], [a / 2, 1.5 * d, 0], [a / 2, 2.5 * d, 0]], float)
    cell = [[a, 0, 0], [0, 3 * d, 0], [0, 0, 0]]
    pos += rng.uniform(-amplitude, amplitude, pos.shape)
    return Structure.from_arrays([5, 7, 5, 7], pos, cell, [True, True, False])


def _per_irrep_slot(irreps: e3nn.Irreps, values: np.ndarray) -> np.ndarray:
    """Repeat one value per irrep slot over its 2l+1 components: ``[..., num_irreps] ->
    [..., irreps.dim]`` (so a scale keeps equivariance)."""
    repeats = np.concatenate([np.full(mul, ir.dim) for mul, ir in irreps]).astype(np.int64)
    return np.repeat(values, repeats, axis=-1)


def _scalar_slots(irreps: e3nn.Irreps) -> np.ndarray:
    """bool ``[irreps.dim]``: True on the components of even scalars (0e)."""
    import e3nn_jax as e3nn

    return np.concatenate([np.full(mul * ir.dim, ir == e3nn.Irrep("0e")) for mul, ir in irreps])


def random_statistics(
    layout: OutputLayout,
    rng: np.random.Generator,
    *,
    pair_cutoff: float = 4.0,
    scale_range: tuple[float, float] = (0.5, 2.0),
    shift_range: tuple[float, float] = (-3.0, 3.0),
) -> Statistics:
    """Random, non-trivial `Statistics` for ``layout`` that keep equivariance.

    Scales are positive and drawn once per irrep slot (the 2l+1 components of one irrep share
    it) and per species (pair); on-site shifts and on-site overlaps are drawn on the even
    scalar (0e) slots only. Everything is zero on the slots a species (pair) does not use.
    """
    from gears_h_core.model.scale_shift import Statistics

    lo, hi = scale_range
    n_s, n_k = layout.n_species, layout.n_species_pairs
    on_irreps, hop_irreps = layout.onsite_irreps, layout.hopping_irreps

    def scales(irreps: e3nn.Irreps, n: int, mask: np.ndarray) -> np.ndarray:
        slot = rng.uniform(lo, hi, size=(n, irreps.num_irreps))
        return (_per_irrep_slot(irreps, slot) * mask).astype(np.float32)

    def scalars(irreps: e3nn.Irreps, n: int, mask: np.ndarray) -> np.ndarray:
        values = rng.uniform(*shift_range, size=(n, irreps.dim))
        return (values * _scalar_slots(irreps)[None, :] * mask).astype(np.float32)

    return Statistics(
        onsite_shift=scalars(on_irreps, n_s, layout.onsite_mask),
        onsite_scale=scales(on_irreps, n_s, layout.onsite_mask),
        hopping_scale=scales(hop_irreps, n_k, layout.hopping_mask),
        overlap_onsite=scalars(on_irreps, n_s, layout.onsite_mask),
        overlap_scale=scales(hop_irreps, n_k, layout.hopping_mask),
        pair_cutoff=np.full(n_k, pair_cutoff, dtype=np.float32),
    )


def random_params(model: Any, batch: Any, constants: Any, rng: np.random.Generator) -> Any:
    """Parameters of a flax ``model`` with every leaf drawn from N(0, 1) (numpy float32).

    The shapes come from ``jax.eval_shape(model.init, ...)`` (traced, never compiled: compiling
    ``init`` of the equivariant network takes far longer than applying it). e3nn-jax layers
    initialise their weights as N(0, 1) themselves (path normalisation is in the forward
    pass), so these parameters are as well scaled as fresh ones, with no zero leaf.

    Args:
        model: a flax module whose ``init(key, batch, constants)`` builds its parameters.
        batch, constants: example inputs (arrays or ``jax.ShapeDtypeStruct``).
    """
    import jax

    shapes = jax.eval_shape(model.init, jax.random.key(0), batch, constants)
    return jax.tree.map(
        lambda s: rng.standard_normal(s.shape).astype(s.dtype),
        shapes,
    )


def random_bundle(
    basis: Any,
    config: ModelConfig,
    ladder: Any,
    pair_cutoff: float,
    *,
    name: str = "tiny-random",
    metadata: dict[str, Any] | None = None,
) -> Any:
    """A `ModelBundle` with `random_params` (seed 0) and `random_statistics` (seed 1).

    Args:
        basis: `OrbitalBasis` of every species of the model.
        ladder: `BucketLadder` stored in the bundle.
        pair_cutoff: hopping cutoff of every species pair (Å).
    """
    from gears_h_core.io.bundle import ModelBundle
    from gears_h_core.model.hamiltonian import HamiltonianModel, ModelConstants
    from gears_h_core.model.layout import OutputLayout
    from gears_h_core.predict import batch_spec, params_to_flat

    layout = OutputLayout.create(basis, basis.species)
    stats = random_statistics(layout, np.random.default_rng(1), pair_cutoff=pair_cutoff)
    model = HamiltonianModel(config, layout.n_species, layout.onsite_irreps, layout.hopping_irreps)
    constants = ModelConstants.create(layout, stats)
    params = random_params(
        model, batch_spec(ladder.buckets[0]), constants, np.random.default_rng(0)
    )
    species = layout.species
    return ModelBundle(
        name=name,
        config=config,
        basis=basis,
        species=species,
        pair_cutoff={(a, b): pair_cutoff for a in species for b in species if a <= b},
        params=params_to_flat(params),
        statistics=stats.to_numpy(),
        ladder=ladder.to_dict(),
        metadata=dict(metadata or {}),
    )


# --------------------------------------------------------------------------------------------
# Asserts on predicted block matrices (H or S of a `SparseHamiltonian`)
# --------------------------------------------------------------------------------------------


PairKey = tuple[int, int, tuple[int, int, int]]


def onsite_blocks(matrix: BlockMatrix) -> dict[int, np.ndarray]:
    """atom index -> on-site block."""
    return {int(a): group.blocks[k] for group in matrix.onsite for k, a in enumerate(group.atoms)}


def hopping_blocks(matrix: BlockMatrix) -> dict[PairKey, np.ndarray]:
    """``(i, j, shift)`` -> hopping block; raises if a row occurs twice."""
    out: dict[PairKey, np.ndarray] = {}
    for group in matrix.hopping:
        for k in range(group.i.shape[0]):
            n0, n1, n2 = (int(x) for x in group.shift[k])
            key = (int(group.i[k]), int(group.j[k]), (n0, n1, n2))
            if key in out:
                raise AssertionError(f"hopping row {key} occurs twice")
            out[key] = group.blocks[k]
    return out


def _matrices(result: SparseHamiltonian) -> dict[str, BlockMatrix]:
    out = {"H": result.H}
    if result.S is not None:
        out["S"] = result.S
    return out


def assert_hamiltonians_equivariant(
    result: SparseHamiltonian,
    rotated: SparseHamiltonian,
    R: np.ndarray,
    *,
    rtol: float = 1e-5,
    min_scale: float = 1e-2,
) -> float:
    """Assert every H (and S) block of ``rotated`` is ``W_i(R) B W_j(R)ᵀ`` of ``result``'s.

    ``rotated`` is the prediction for ``result.structure.transformed(R, t)`` (atoms in the same
    order, integer shifts unchanged); rows are matched by ``(i, j, shift)`` and both must hold
    the same rows.

    The error of a block is measured relative to its own largest entry, but never relative to
    less than ``min_scale`` × the largest entry of the whole operator: blocks of pairs close to
    their cutoff are damped by the smooth envelope to tiny values (down to 1e-34) whose
    relative round-off is amplified by the envelope's steepness, yet are absolutely negligible.
    With the default 1e-2 and ``rtol`` 1e-5, the allowed error of such a block is 1e-7 of the
    operator's largest entry, about one float32 ulp of it: round-off of the O(1) terms a
    small block is computed from. (1e-3 failed on one CPU model for the default bundle's S:
    1.3e-8 on a 1e-3 block, 0.1 ulp of S's largest entry, depending on the CPU's vector
    instructions; a real equivariance error is of the order of the block itself.)

    Returns:
        the largest relative error seen (in the measure above).
    """
    ells = result.basis.shells
    numbers = result.structure.numbers
    worst = 0.0
    mats, rot_mats = _matrices(result), _matrices(rotated)
    if set(mats) != set(rot_mats):
        raise AssertionError(f"operators differ: {sorted(mats)} vs {sorted(rot_mats)}")
    for name, matrix in mats.items():
        pairs = {(a, a, (0, 0, 0)): b for a, b in onsite_blocks(matrix).items()}
        rot_pairs = {(a, a, (0, 0, 0)): b for a, b in onsite_blocks(rot_mats[name]).items()}
        pairs.update(hopping_blocks(matrix))
        rot_pairs.update(hopping_blocks(rot_mats[name]))
        if set(pairs) != set(rot_pairs):
            diff = sorted(set(pairs) ^ set(rot_pairs))[:5]
            raise AssertionError(f"{name}: rotated structure has other rows, e.g. {diff}")
        floor = min_scale * max(float(np.abs(b).max(initial=0.0)) for b in pairs.values())
        for key, block in pairs.items():
            i, j, _ = key
            w_i = wigner_for_shells(ells[int(numbers[i])], R)
            w_j = wigner_for_shells(ells[int(numbers[j])], R)
            expected = w_i @ np.asarray(block, np.float64) @ w_j.T
            scale = max(float(np.abs(block).max(initial=0.0)), floor) or 1.0
            err = float(np.abs(rot_pairs[key] - expected).max(initial=0.0)) / scale
            if err > rtol:
                raise AssertionError(
                    f"{name} block {key}: not equivariant, max |rotated - W B Wᵀ| = "
                    f"{err * scale:.3e} > {rtol:.1e} × scale {scale:.3e}"
                )
            worst = max(worst, err)
    return worst


def assert_hermitian(matrix: BlockMatrix, *, name: str = "H") -> None:
    """Assert exact hermiticity: every on-site block is symmetric and every hopping row
    ``(i, j, n)`` has a partner ``(j, i, −n)`` holding exactly the transposed block."""
    for a, block in onsite_blocks(matrix).items():
        if not np.array_equal(block, block.T):
            raise AssertionError(f"{name}: on-site block of atom {a} is not symmetric")
    rows = hopping_blocks(matrix)
    for (i, j, n), block in rows.items():
        partner = (j, i, (-n[0], -n[1], -n[2]))
        if partner not in rows:
            raise AssertionError(f"{name}: row {(i, j, n)} has no partner {partner}")
        if not np.array_equal(rows[partner], block.T):
            raise AssertionError(f"{name}: block {partner} is not exactly block {(i, j, n)}ᵀ")


def assert_block_matrices_close(
    a: BlockMatrix,
    b: BlockMatrix,
    *,
    rtol: float = 1e-6,
    permutation: np.ndarray | None = None,
    name: str = "H",
) -> float:
    """Assert ``a`` and ``b`` hold the same rows with blocks equal within ``rtol`` × the
    largest entry of ``a`` (per operator).

    With ``permutation`` (``b`` is the prediction for the structure with atoms reordered so
    that new atom ``k`` is old atom ``permutation[k]``), row ``(k, l, n)`` of ``b`` is compared
    with row ``(permutation[k], permutation[l], n)`` of ``a``. Returns the largest relative
    difference.
    """
    perm = None if permutation is None else np.asarray(permutation)

    def old(k: int) -> int:
        return k if perm is None else int(perm[k])

    on_a, on_b = onsite_blocks(a), onsite_blocks(b)
    hop_a, hop_b = hopping_blocks(a), hopping_blocks(b)
    pairs_a = {(k, k, (0, 0, 0)): v for k, v in on_a.items()} | hop_a
    pairs_b = {(old(i), old(j), n): v for (i, j, n), v in hop_b.items()}
    pairs_b |= {(old(k), old(k), (0, 0, 0)): v for k, v in on_b.items()}
    if set(pairs_a) != set(pairs_b):
        diff = sorted(set(pairs_a) ^ set(pairs_b))[:5]
        raise AssertionError(f"{name}: the two predictions hold other rows, e.g. {diff}")
    scale = max(float(np.abs(v).max(initial=0.0)) for v in pairs_a.values()) or 1.0
    worst_key, worst = None, 0.0
    for key, block in pairs_a.items():
        err = float(np.abs(np.asarray(pairs_b[key], np.float64) - block).max(initial=0.0))
        if err > worst:
            worst_key, worst = key, err
    if worst > rtol * scale:
        raise AssertionError(
            f"{name}: blocks differ by {worst:.3e} at row {worst_key} "
            f"(> {rtol:.1e} × scale {scale:.3e})"
        )
    return worst / scale
