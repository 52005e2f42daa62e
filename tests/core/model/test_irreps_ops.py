"""The fast irreps operations equal e3nn-jax's (same parameters, same outputs)."""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gears_h_core.model.interaction import gated
from gears_h_core.model.irreps_ops import (
    Linear,
    elementwise_tensor_product,
    gate_parts,
    regrouped_copy_index,
    scale_irreps,
    tensor_product,
)

HIDDEN = e3nn.Irreps("6x0e+3x1o+2x1e+2x2e+1x2o+1x3o+1x4e")
ROWS = 7


def _normal(irreps: str | e3nn.Irreps, seed: int) -> e3nn.IrrepsArray:
    return e3nn.normal(irreps, jax.random.PRNGKey(seed), (ROWS,))


def _close(a: e3nn.IrrepsArray, b: e3nn.IrrepsArray, tol: float = 2e-5) -> None:
    assert a.irreps == b.irreps
    assert a.zero_flags == b.zero_flags
    scale = max(1.0, float(jnp.abs(a.array).max()))
    np.testing.assert_allclose(np.asarray(a.array), np.asarray(b.array), atol=tol * scale)


def _same_params(a: object, b: object) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert u.shape == v.shape
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("irreps_out", [gated(HIDDEN), HIDDEN, e3nn.Irreps("2x0e+1x1o+1x0e+2x5e")])
def test_linear_equals_e3nn(irreps_out: e3nn.Irreps) -> None:
    # an input with a known-zero chunk: e3nn drops it from the instructions (and names)
    x = e3nn.concatenate([_normal("3x0e+2x1o+1x2e+2x1o", 0), e3nn.zeros("4x1e", (ROWS,))])
    ref = e3nn.flax.Linear(irreps_out, force_irreps_out=True)
    fast = Linear(irreps_out)
    p_ref = ref.init(jax.random.PRNGKey(1), x)
    _same_params(p_ref, fast.init(jax.random.PRNGKey(1), x))
    _close(ref.apply(p_ref, x), fast.apply(p_ref, x))


def test_linear_of_scaled_parts_equals_concatenate_regroup_scale() -> None:
    parts = [_normal("2x1o+3x0e", 0), _normal("1x2e+2x0e+1x1o", 1), _normal("1x1o", 2)]
    cat = e3nn.concatenate(parts)
    grouped = cat.regroup()
    weights = jax.random.normal(jax.random.PRNGKey(3), (ROWS, grouped.irreps.num_irreps))
    ref = e3nn.flax.Linear(HIDDEN, force_irreps_out=True)
    p = ref.init(jax.random.PRNGKey(4), grouped)
    want = ref.apply(p, grouped * weights)
    # weights meant for the regrouped copies, reordered to the parts' order
    got = Linear(HIDDEN).apply(p, parts, weights[:, regrouped_copy_index(cat.irreps)])
    _close(want, got)


@pytest.mark.parametrize("n_index", [1, 4])
def test_indexed_linear_equals_one_hot_spread(n_index: int) -> None:
    """The old form of the species-pair map: n one-hot copies of the input (times √n),
    concatenated, regrouped, one shared linear map."""
    x = _normal(HIDDEN, 0)
    index = jnp.asarray(np.random.default_rng(0).integers(0, n_index, ROWS))
    onehot = jax.nn.one_hot(index, n_index) * np.sqrt(n_index)
    spread = e3nn.concatenate([x * onehot[:, k : k + 1] for k in range(n_index)]).regroup()
    out = e3nn.Irreps("2x0e+3x1o+1x2e+1x3o")
    ref = e3nn.flax.Linear(out, force_irreps_out=True)
    p = ref.init(jax.random.PRNGKey(1), spread)
    _same_params(p, Linear(out, n_index=n_index).init(jax.random.PRNGKey(1), x, None, index))
    _close(ref.apply(p, spread), Linear(out, n_index=n_index).apply(p, x, None, index))


def test_indexed_linear_uses_each_rows_own_weights() -> None:
    x = _normal(HIDDEN, 0)
    lin = Linear(e3nn.Irreps("2x0e+1x1o"), n_index=3)
    p = lin.init(jax.random.PRNGKey(1), x, None, jnp.zeros(ROWS, jnp.int32))
    a = lin.apply(p, x, None, jnp.zeros(ROWS, jnp.int32)).array
    b = lin.apply(p, x, None, jnp.full(ROWS, 2, jnp.int32)).array
    assert float(jnp.abs(a - b).min()) > 0.0


def test_linear_refuses_bad_arguments() -> None:
    x = _normal(HIDDEN, 0)
    with pytest.raises(ValueError, match="index"):
        Linear(HIDDEN, n_index=2).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="scale"):
        Linear(HIDDEN).init(jax.random.PRNGKey(0), x, jnp.ones((ROWS, 3)))


def test_gate_parts_equal_e3nn_gate() -> None:
    x = _normal(gated(HIDDEN), 0)
    parts, scale = gate_parts(x)
    _close(e3nn.gate(x), scale_irreps(e3nn.concatenate(parts), scale))


def test_scale_irreps_equals_e3nn_product() -> None:
    x = e3nn.concatenate([_normal("2x0e+1x2o+3x1e", 0), e3nn.zeros("2x1o", (ROWS,))])
    w = jax.random.normal(jax.random.PRNGKey(1), (ROWS, x.irreps.num_irreps))
    _close(x * w, scale_irreps(x, w))


@pytest.mark.parametrize(
    ("x_irreps", "y_irreps"),
    [
        ("4x0e+2x1o+2x1e+1x2e+1x2o+1x3o+1x3e+1x4e", e3nn.Irreps.spherical_harmonics(4)),
        ("1x1o+2x0e+1x1o", "1x0e+2x1o+1x2e"),  # unsorted x, y with a mul > 1
    ],
)
def test_tensor_product_equals_e3nn(x_irreps: str, y_irreps: str | e3nn.Irreps) -> None:
    x, y = _normal(x_irreps, 0), _normal(y_irreps, 1)
    _close(e3nn.tensor_product(x, y, filter_ir_out=HIDDEN), tensor_product(x, y, HIDDEN), 1e-5)


@pytest.mark.parametrize(
    ("x_irreps", "y_irreps"),
    [(HIDDEN, HIDDEN), ("3x0e+2x1o+1x2e", "1x1o+2x0e+2x2e+1x1e")],  # aligned, unaligned
)
def test_elementwise_tensor_product_equals_e3nn(
    x_irreps: str | e3nn.Irreps, y_irreps: str | e3nn.Irreps
) -> None:
    x, y = _normal(x_irreps, 0), _normal(y_irreps, 1)
    _close(
        e3nn.elementwise_tensor_product(x, y, filter_ir_out=HIDDEN),
        elementwise_tensor_product(x, y, HIDDEN),
        1e-5,
    )


def test_products_with_zero_chunks_keep_e3nn_zero_flags() -> None:
    x = e3nn.concatenate([_normal("2x0e", 0), e3nn.zeros("2x1o", (ROWS,))])
    sh = _normal(e3nn.Irreps.spherical_harmonics(2), 1)
    _close(e3nn.tensor_product(x, sh, filter_ir_out=HIDDEN), tensor_product(x, sh, HIDDEN))
