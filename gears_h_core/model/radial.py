"""Radial basis with a smooth cutoff envelope, and a numerically safe norm."""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp


def safe_norm(vectors: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Euclidean norm over the last axis with a finite gradient at zero. ``[..., 3] -> [...]``."""
    sq = jnp.sum(vectors**2, axis=-1)
    safe = jnp.where(sq > eps, sq, 1.0)
    return jnp.where(sq > eps, jnp.sqrt(safe), 0.0)


def envelope(x: jax.Array) -> jax.Array:
    """Smooth (C-infinity) cutoff envelope of the reduced distance x = r / r_c; 0 for x >= 1."""
    return e3nn.soft_envelope(x, x_max=1.0)


def radial_basis(r: jax.Array, cutoff: jax.Array | float, n: int) -> jax.Array:
    """Bessel basis times envelope, ``[...] -> [..., n]``; exactly zero beyond the cutoff."""
    x = r / cutoff
    basis = e3nn.bessel(jnp.clip(x, 0.0, 1.0), n, x_max=1.0)
    return basis * envelope(x)[..., None]
