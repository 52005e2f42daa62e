"""Block <-> irreps change of basis: exact round trip, orthogonality, equivariance, parity."""

from __future__ import annotations

import itertools

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gears_h_core.basis.conventions import wigner_for_shells
from gears_h_core.basis.irreps import BlockIrreps, block_irreps
from gears_h_core.testing import assert_blocks_equivariant

SHELL_PAIRS = [((l1,), (l2,)) for l1, l2 in itertools.product(range(4), repeat=2)]
MULTI_SHELL = [
    ((0, 1, 0, 1, 2), (0, 0, 1, 1, 2, 0, 0, 1, 1, 2, 1)),
    ((0, 0, 1, 1, 2), (0, 1, 2, 3)),
    ((3, 0, 2), (1, 3)),
]
CASES = SHELL_PAIRS + MULTI_SHELL


def _ids(case: tuple[tuple[int, ...], tuple[int, ...]]) -> str:
    return "".join(map(str, case[0])) + "x" + "".join(map(str, case[1]))


def _n(ells: tuple[int, ...]) -> int:
    return sum(2 * ell + 1 for ell in ells)


def _transforms() -> list[np.ndarray]:
    """Two random rotations, inversion, a rotoinversion and a mirror."""
    rots = Rotation.random(3, random_state=11).as_matrix()
    return [rots[0], rots[1], -np.eye(3), -rots[2], np.diag([1.0, -1.0, 1.0])]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_matrix_is_orthogonal_and_round_trip_is_exact(
    case: tuple[tuple[int, ...], tuple[int, ...]],
) -> None:
    ells_i, ells_j = case
    bi = block_irreps(ells_i, ells_j)
    n_i, n_j = _n(ells_i), _n(ells_j)
    assert (bi.n_i, bi.n_j, bi.dim) == (n_i, n_j, n_i * n_j)
    assert bi.irreps.dim == bi.dim
    assert bi.matrix.shape == (n_i * n_j, n_i * n_j) and bi.matrix.dtype == np.float64
    np.testing.assert_allclose(bi.matrix.T @ bi.matrix, np.eye(bi.dim), atol=1e-12)

    blocks = np.random.default_rng(0).normal(size=(3, n_i, n_j))
    x = bi.block_to_irreps(blocks)
    assert x.shape == (3, bi.dim) and x.dtype == np.float64
    np.testing.assert_allclose(bi.irreps_to_block(x), blocks, atol=1e-12)
    # vec(B) = U x with vec the row-major flatten; the norm is preserved
    np.testing.assert_allclose(blocks.reshape(3, -1), x @ bi.matrix.T, atol=1e-12)
    np.testing.assert_allclose(
        np.linalg.norm(x, axis=1), np.linalg.norm(blocks, axis=(1, 2)), rtol=1e-12
    )


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_irreps_are_equivariant_with_parity(
    case: tuple[tuple[int, ...], tuple[int, ...]],
) -> None:
    ells_i, ells_j = case
    bi = block_irreps(ells_i, ells_j)
    block = np.random.default_rng(1).normal(size=(bi.n_i, bi.n_j))
    x = bi.block_to_irreps(block)
    for R in _transforms():
        w_i, w_j = wigner_for_shells(ells_i, R), wigner_for_shells(ells_j, R)
        rotated = w_i @ block @ w_j.T
        d = bi.D_from_matrix(R)
        np.testing.assert_allclose(bi.block_to_irreps(rotated), d @ x, atol=1e-12)
        # the other direction, with the shared assert
        assert_blocks_equivariant(block, bi.irreps_to_block(d @ x), ells_i, ells_j, R, rtol=1e-12)


def test_representation_matches_e3nn_irreps() -> None:
    """`BlockIrreps.D_from_matrix` is e3nn-jax's ``irreps.D_from_matrix`` (float32 there)."""
    bi = block_irreps([1, 2], [2])  # 1o, 2o, 3o, 0e, 1e, 2e, 3e, 4e
    d_of = jax.jit(bi.irreps.D_from_matrix)
    for R in _transforms()[1:4]:  # a rotation, inversion and a rotoinversion
        ref = np.asarray(d_of(jnp.asarray(R, dtype=jnp.float32)))
        np.testing.assert_allclose(bi.D_from_matrix(R), ref, atol=2e-5)


def test_irreps_order_and_parity() -> None:
    bi = block_irreps([0, 1], [2, 1])
    expected = [
        (0, 0, 2),
        (0, 1, 1),
        (1, 0, 1),
        (1, 0, 2),
        (1, 0, 3),
        (1, 1, 0),
        (1, 1, 1),
        (1, 1, 2),
    ]
    assert bi.components == tuple(expected)
    assert bi.irreps == e3nn.Irreps("2e + 1o + 1o + 2o + 3o + 0e + 1e + 2e")
    assert str(bi.irreps) == "1x2e+1x1o+1x1o+1x2o+1x3o+1x0e+1x1e+1x2e"  # not simplified


def test_scalar_irreps_are_trace_over_sqrt_dim() -> None:
    """Normalization check: the L = 0 irrep of an (l, l) shell pair is ±trace/√(2l+1)."""
    for ell in range(4):
        bi = block_irreps([ell], [ell])
        x = bi.block_to_irreps(np.eye(2 * ell + 1))
        k = bi.components.index((0, 0, 0))
        assert abs(abs(x[k]) - np.sqrt(2 * ell + 1)) < 1e-12
        np.testing.assert_allclose(np.delete(x, k), 0.0, atol=1e-12)


def test_factory_is_cached_and_validates() -> None:
    assert block_irreps([0, 1], [1]) is block_irreps((0, 1), (1,))
    bi = block_irreps([1], [2])
    assert isinstance(bi, BlockIrreps)
    with pytest.raises(ValueError, match="do not match"):
        bi.block_to_irreps(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="do not match"):
        bi.irreps_to_block(np.zeros(14))
    with pytest.raises(ValueError):
        block_irreps([-1], [0])


def test_numpy_float32_stays_float32() -> None:
    bi = block_irreps([1, 2], [0, 1])
    blocks = np.random.default_rng(2).normal(size=(2, 8, 4)).astype(np.float32)
    x = bi.block_to_irreps(blocks)
    assert isinstance(x, np.ndarray) and x.dtype == np.float32
    back = bi.irreps_to_block(x)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, blocks, atol=1e-6)


def test_jax_path_float32_and_jit() -> None:
    ells_i, ells_j = (0, 1, 2), (1, 3)
    bi = block_irreps(ells_i, ells_j)
    blocks = np.random.default_rng(3).normal(size=(4, bi.n_i, bi.n_j))
    ref = bi.block_to_irreps(blocks)  # numpy float64

    @jax.jit
    def round_trip(b: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = bi.block_to_irreps(b)
        return x, bi.irreps_to_block(x)

    x, back = round_trip(jnp.asarray(blocks, dtype=jnp.float32))
    assert isinstance(x, jax.Array) and x.dtype == jnp.float32 and x.shape == (4, bi.dim)
    assert back.dtype == jnp.float32 and back.shape == blocks.shape
    np.testing.assert_allclose(np.asarray(x), ref, atol=2e-6)
    np.testing.assert_allclose(np.asarray(back), blocks, atol=2e-6)

    # equivariance holds to float32 round-off on the jax path too
    R = Rotation.random(random_state=12).as_matrix()
    rotated = wigner_for_shells(ells_i, R) @ blocks @ wigner_for_shells(ells_j, R).T
    x_rot = np.asarray(round_trip(jnp.asarray(rotated, dtype=jnp.float32))[0])
    np.testing.assert_allclose(x_rot, np.asarray(x) @ bi.D_from_matrix(R).T, atol=1e-5)

    # with x64 enabled, float64 jax input stays float64 and is exact
    with jax.enable_x64(True):
        x64 = bi.block_to_irreps(jnp.asarray(blocks, dtype=jnp.float64))
        assert x64.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(x64), ref, atol=1e-12)


def test_integer_and_list_input_promote_to_float64() -> None:
    bi = block_irreps([1], [0])
    x = bi.block_to_irreps([[1], [2], [3]])
    assert isinstance(x, np.ndarray) and x.dtype == np.float64
    np.testing.assert_allclose(bi.irreps_to_block(x), [[1.0], [2.0], [3.0]], atol=1e-15)
