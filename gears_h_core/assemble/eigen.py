"""Eigenvalues of the generalized problem ``H(k) c = ε S(k) c`` (real or complex Hermitian).

* `generalized_eigvalsh`: all eigenvalues, dense LAPACK (``scipy.linalg.eigh``); refuses
  matrices above ``max_size`` orbitals (default `DEFAULT_MAX_DENSE_SIZE`) because it forms
  dense N × N copies.
* `eigvals_near`: the ``n`` eigenvalues nearest to an energy, sparse shift-invert Lanczos
  (``scipy.sparse.linalg.eigsh`` with ``sigma``), for systems too large to diagonalise.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = ["DEFAULT_MAX_DENSE_SIZE", "eigvals_near", "generalized_eigvalsh"]

DEFAULT_MAX_DENSE_SIZE = 20_000

type MatrixLike = np.ndarray | sp.sparray | sp.spmatrix


def _dense(m: MatrixLike) -> np.ndarray:
    if isinstance(m, sp.sparray | sp.spmatrix):
        return np.asarray(m.toarray())
    return np.asarray(m)


def _is_real(m: np.ndarray) -> bool:
    return not np.iscomplexobj(m) or not np.any(m.imag)


def _check_square(name: str, m: MatrixLike, n: int | None = None) -> int:
    shape = m.shape
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name}: expected a square matrix, got shape {tuple(shape)}")
    if n is not None and shape[0] != n:
        raise ValueError(f"{name}: shape {tuple(shape)} does not match H ({n} × {n})")
    return int(shape[0])


def generalized_eigvalsh(
    Hk: MatrixLike,
    Sk: MatrixLike | None = None,
    *,
    max_size: int = DEFAULT_MAX_DENSE_SIZE,
) -> np.ndarray:
    """All eigenvalues of ``H c = ε S c`` (or ``H c = ε c`` without S), ascending.

    Args:
        Hk: Hermitian ``[N, N]`` (dense or scipy sparse; real or complex).
        Sk: Hermitian positive definite ``[N, N]`` or None.
        max_size: largest N accepted (the dense copies need ~2·16·N² bytes when complex).

    Returns:
        float64 ``[N]``.

    Raises:
        ValueError: non-square or mismatched inputs, or N > ``max_size``.
        numpy.linalg.LinAlgError: S is not positive definite.
    """
    n = _check_square("H", Hk)
    if Sk is not None:
        _check_square("S", Sk, n)
    if n > max_size:
        raise ValueError(
            f"dense diagonalisation of {n} orbitals refused (limit max_size={max_size}); "
            f"use eigvals_near() for a few eigenvalues of a large system"
        )
    H = _dense(Hk)
    S = None if Sk is None else _dense(Sk)
    if _is_real(H) and (S is None or _is_real(S)):
        # e.g. H(Γ) built as complex: the real symmetric problem has the same eigenvalues
        # and costs a fraction of the complex one.
        H = H.real
        S = None if S is None else S.real
    eps = sla.eigh(H, S, eigvals_only=True, check_finite=True)
    return np.asarray(eps, dtype=np.float64)


def eigvals_near(
    Hk: MatrixLike,
    Sk: MatrixLike | None,
    energy: float,
    n: int,
    *,
    tol: float = 0.0,
) -> np.ndarray:
    """The ``n`` eigenvalues of ``H c = ε S c`` nearest to ``energy``, ascending.

    Shift-invert Lanczos (``eigsh(H, k=n, M=S, sigma=energy, mode="normal")``): factorises
    ``H − energy·S`` once (sparse LU), so memory stays ~ the fill-in of that factorisation.
    ``energy`` should not be an eigenvalue itself (pick a point inside a gap or between
    levels, e.g. E_F).

    Args:
        Hk, Sk: Hermitian ``[N, N]`` (sparse or dense; real or complex); Sk may be None.
        energy: target energy (eV).
        n: number of eigenvalues, ``1 ≤ n < N``.
        tol: ARPACK relative tolerance (0: machine precision).

    Returns:
        float64 ``[n]``.
    """
    size = _check_square("H", Hk)
    if Sk is not None:
        _check_square("S", Sk, size)
    if not 1 <= n < size:
        raise ValueError(
            f"n={n} eigenvalues requested of a {size} × {size} problem (need 1 ≤ n < N)"
        )
    H = sp.csc_array(Hk) if sp.issparse(Hk) else np.asarray(Hk)
    S = None if Sk is None else (sp.csc_array(Sk) if sp.issparse(Sk) else np.asarray(Sk))
    vals = spla.eigsh(
        H,
        k=n,
        M=S,
        sigma=float(energy),
        which="LM",
        mode="normal",
        tol=tol,
        return_eigenvectors=False,
    )
    return np.sort(np.real(np.asarray(vals))).astype(np.float64)
