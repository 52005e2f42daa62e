"""Electronic structure from atom-pair blocks: k-paths, band energies, Gaussian DOS.

One code path for every caller: ``gears_h bands``/``dos`` on predictions, the reference bands
overlaid from a snapshot folder, and the eigenvalue errors of ``gears_h evaluate`` all call
`band_energies` on a `SparseHamiltonian`, which builds ``H(k)``, ``S(k)``
(`gears_h_core.assemble.sparse.hamiltonian_at_k`, §2 Bloch convention) and solves
``H(k) c = ε S(k) c``:

* **dense** (``solver="dense"``, the default up to ``dense_limit`` orbitals): every
  eigenvalue, LAPACK (`generalized_eigvalsh`);
* **shift-invert** (``solver="shift-invert"``, the default above ``dense_limit``): the
  ``n_window`` eigenvalues nearest to ``center`` (E_F, say) by sparse shift-invert Lanczos
  (`eigvals_near`), never forming a dense N × N matrix.

An overlap that is not positive definite (an under-trained model: S(k) of a dzp basis has
eigenvalues down to ~1e-4, below the model's S error) raises
`OverlapNotPositiveDefiniteError` naming the k point and the smallest eigenvalue of S(k). The
documented fallback, ``overlap_threshold`` (dense solver only), is canonical orthogonalisation
(Löwdin): at every k the eigenvectors of S(k) with eigenvalue ≤ threshold are projected out and
``X† H X`` is diagonalised in the remaining subspace, ``X = U_keep s_keep^(-1/2)``. Each k point
then has N − n_dropped(k) eigenvalues; all rows are cut (from the top) to the shortest one so
that bands keep their index from the bottom.

Nothing here imports matplotlib or ASE at module import time (ASE only inside `band_path`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.sparse as sp

from gears_h_core.assemble.eigen import eigvals_near, generalized_eigvalsh
from gears_h_core.assemble.sparse import hamiltonian_at_k
from gears_h_core.types import SparseHamiltonian

if TYPE_CHECKING:
    from gears_h_core.structure import Structure

__all__ = [
    "DEFAULT_DENSE_LIMIT",
    "DEFAULT_N_WINDOW",
    "LATTICE_TOLERANCES",
    "BandPath",
    "BandStructure",
    "OverlapNotPositiveDefiniteError",
    "band_energies",
    "band_path",
    "count_negative_eigenvalues",
    "gaussian_dos",
    "kpoint_mesh",
    "linear_kpoint_axis",
]

#: largest number of orbitals diagonalised densely by default (above: shift-invert window)
DEFAULT_DENSE_LIMIT = 3000
#: eigenvalues per k point of the shift-invert window by default
DEFAULT_N_WINDOW = 32
#: ASE lattice-recognition tolerances tried in turn when a path names special points the
#: cell's exact Bravais lattice does not have (a strained hexagonal cell is oblique at ASE's
#: default 2e-4 but hexagonal within 0.2)
LATTICE_TOLERANCES = (2e-4, 1e-3, 1e-2, 5e-2, 0.1, 0.2, 0.3)

Solver = Literal["auto", "dense", "shift-invert"]


class OverlapNotPositiveDefiniteError(np.linalg.LinAlgError):
    """S(k) has eigenvalues ≤ 0, so ``H c = ε S c`` has no meaningful solution.

    A `numpy.linalg.LinAlgError` (hence a `ValueError`). Attributes: ``k`` (reduced, [3]),
    ``min_eigenvalue`` (float or None when only the count is known) and ``n_negative`` (int or
    None).
    """

    def __init__(self, k: np.ndarray, min_eigenvalue: float | None, n_negative: int | None) -> None:
        self.k = np.asarray(k, dtype=np.float64)
        self.min_eigenvalue = min_eigenvalue
        self.n_negative = n_negative
        parts = []
        if n_negative is not None:
            parts.append(f"{n_negative} eigenvalue(s) ≤ 0")
        if min_eigenvalue is not None:
            parts.append(f"smallest eigenvalue {min_eigenvalue:.3g}")
        kk = ", ".join(f"{x:.4g}" for x in self.k)
        super().__init__(f"S(k) at k = ({kk}) is not positive definite ({'; '.join(parts)})")


@dataclass(frozen=True, eq=False)
class BandStructure:
    """Eigenvalues of ``H(k) c = ε S(k) c`` over a list of k points.

    Attributes:
        kpoints: reduced coordinates, float64 ``[n_k, 3]``.
        eigenvalues: eV, ascending per k point, float64 ``[n_k, n_bands]``.
        solver: ``"dense"`` or ``"shift-invert"``.
        n_dropped: overlap directions projected out per k point (canonical
            orthogonalisation), int64 ``[n_k]``; zeros without ``overlap_threshold``.
    """

    kpoints: np.ndarray
    eigenvalues: np.ndarray
    solver: str
    n_dropped: np.ndarray


@dataclass(frozen=True, eq=False)
class BandPath:
    """A k path through special points (ASE's ``bandpath`` for the cell).

    Attributes:
        kpoints: reduced coordinates of the cell, float64 ``[n_k, 3]``.
        x: cumulative path length in the actual cell (`linear_kpoint_axis`), ``[n_k]``.
        special_x: positions of the special points on ``x``, float64 ``[n_special]``.
        labels: their names (``"G"`` is Γ), ``[n_special]``.
        lattice: the Bravais lattice the labels refer to (e.g. ``"HEX2D"``).
        tolerance: the lattice-recognition tolerance that was used.
    """

    kpoints: np.ndarray
    x: np.ndarray
    special_x: np.ndarray
    labels: tuple[str, ...]
    lattice: str
    tolerance: float


# --------------------------------------------------------------------------------------------
# k points


def _check_periodic(structure: Structure, what: str) -> np.ndarray:
    pbc = np.asarray(structure.pbc, dtype=bool)
    if not pbc.any():
        raise ValueError(
            f"{what} needs a periodic structure, but this one has no periodic axis "
            "(pbc = F F F): a molecule has only k = 0"
        )
    return pbc


def band_path(
    structure: Structure,
    path: str | None = None,
    npoints: int = 100,
    *,
    tolerance: float | None = None,
) -> BandPath:
    """ASE's band path for the structure's cell (periodic axes only).

    Args:
        structure: a structure with at least one periodic axis.
        path: special-point string such as ``"GMKG"`` (ASE syntax, ``","`` breaks the path);
            None takes the lattice's default special path.
        npoints: number of k points along the whole path.
        tolerance: ASE's lattice-recognition tolerance; None tries `LATTICE_TOLERANCES` in
            turn and takes the first lattice that has every point of ``path``.

    Raises:
        ValueError: a structure without periodicity, or a path naming points the lattice
            does not have (the message lists the ones it has).
    """
    pbc = _check_periodic(structure, "a band path")
    if npoints < 2:
        raise ValueError(f"a band path needs at least 2 k points, got {npoints}")
    from ase.cell import Cell
    from ase.dft.kpoints import parse_path_string

    cell = Cell(np.asarray(structure.cell, dtype=np.float64))
    wanted = None if path is None else {p for seg in parse_path_string(path) for p in seg}
    tolerances = LATTICE_TOLERANCES if tolerance is None else (float(tolerance),)
    seen: dict[str, list[str]] = {}  # lattice name -> its special points
    for eps in tolerances:
        try:
            lat = cell.get_bravais_lattice(eps=eps, pbc=pbc)
        except (ValueError, RuntimeError):  # ASE cannot classify the cell at this tolerance
            continue
        points = lat.get_special_points()
        seen.setdefault(str(lat.name), list(points))
        if wanted is not None and not wanted <= set(points):
            continue
        bp = cell.bandpath(path, npoints=npoints, pbc=[bool(x) for x in pbc], eps=eps)
        kpts = np.asarray(bp.kpts, dtype=np.float64)
        # ASE's own axis measures the idealised lattice; ours the actual cell. The special
        # points sit at the same k-point indices on both.
        ase_x, ase_special, labels = bp.get_linear_kpoint_axis()
        at = [int(np.argmin(np.abs(np.asarray(ase_x) - sx))) for sx in ase_special]
        x = linear_kpoint_axis(structure, kpts)
        return BandPath(
            kpoints=kpts,
            x=x,
            special_x=x[at],
            labels=tuple(str(s) for s in labels),
            lattice=str(lat.name),
            tolerance=float(eps),
        )
    known = set().union(*seen.values()) if seen else set()
    missing = sorted((wanted or set()) - known) or sorted(wanted or ())
    lattices = "; ".join(f"{name} has {', '.join(pts)}" for name, pts in seen.items())
    raise ValueError(
        f"path {path!r}: special point(s) {', '.join(missing)} not found in the Bravais "
        f"lattice of this cell (tolerance up to {max(tolerances):g}: {lattices or 'none'})"
    )


def linear_kpoint_axis(structure: Structure, kpoints: np.ndarray) -> np.ndarray:
    """Cumulative Cartesian length ``Σ |Δk · 2π B|`` (1/Å) of a list of reduced k points.

    B are the reciprocal vectors of the periodic axes of the actual cell (ASE's convention
    with the 2π); non-periodic axes do not count.
    """
    kpoints = np.asarray(kpoints, dtype=np.float64).reshape(-1, 3)
    cell = np.asarray(structure.cell, dtype=np.float64)
    pbc = np.asarray(structure.pbc, dtype=bool)
    rec = np.zeros((3, 3))
    if pbc.any():
        rec[pbc] = np.linalg.pinv(cell[pbc]).T  # reciprocal vectors of the periodic axes
    steps = np.linalg.norm(np.diff(kpoints @ (2.0 * np.pi * rec), axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def kpoint_mesh(structure: Structure, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Γ-centred uniform mesh ``k = (i1/n1, i2/n2, i3/n3)`` (1 along non-periodic axes).

    No symmetry reduction: every point has weight ``1 / (n1 n2 n3)``.

    Returns:
        kpoints float64 ``[n_k, 3]`` and weights float64 ``[n_k]`` (summing to 1).
    """
    n = np.asarray(size, dtype=np.int64).reshape(-1)
    if n.shape != (3,) or np.any(n < 1):
        raise ValueError(f"k mesh must be three positive integers, got {list(size)}")
    pbc = np.asarray(structure.pbc, dtype=bool)
    bad = [("abc"[a], int(n[a])) for a in range(3) if not pbc[a] and n[a] != 1]
    if bad:
        raise ValueError(
            f"k mesh {n.tolist()}: axis {bad[0][0]} is not periodic, its mesh size must be 1"
        )
    grids = np.meshgrid(*(np.arange(m) / m for m in n), indexing="ij")
    k = np.stack([g.reshape(-1) for g in grids], axis=1)
    return k, np.full(k.shape[0], 1.0 / k.shape[0])


# --------------------------------------------------------------------------------------------
# eigenvalues


def count_negative_eigenvalues(S: sp.sparray | sp.spmatrix | np.ndarray) -> int:
    """Number of eigenvalues ≤ 0 of a Hermitian matrix from a sparse LDLᴴ-type factorisation.

    SuperLU in symmetric mode with diagonal pivots only (``diag_pivot_thresh=0``) factorises
    ``P S Pᵀ = L U`` with ``U = D Lᴴ``; by Sylvester's law of inertia the number of
    non-positive pivots of D is the number of non-positive eigenvalues of S. Memory is the
    fill-in of the factorisation, never N².
    """
    import scipy.sparse.linalg as spla

    A = sp.csc_matrix(S)
    try:
        lu = spla.splu(
            A,
            permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": True},
        )
    except RuntimeError:  # "exactly singular": a zero pivot, so at least one eigenvalue is 0
        return 1
    pivots = np.real(lu.U.diagonal())
    return int(np.count_nonzero(pivots <= 0.0))


def _overlap_spectrum_error(k: np.ndarray, S: sp.sparray) -> OverlapNotPositiveDefiniteError:
    s = np.linalg.eigvalsh(S.toarray())
    return OverlapNotPositiveDefiniteError(k, float(s[0]), int(np.count_nonzero(s <= 0.0)))


def _canonical_eigvalsh(Hk: sp.sparray, Sk: sp.sparray, threshold: float) -> tuple[np.ndarray, int]:
    """Eigenvalues of ``X† H X`` with ``X = U_keep s_keep^(-1/2)`` (S eigenvalues > threshold)."""
    H = Hk.toarray()
    s, U = np.linalg.eigh(Sk.toarray())
    keep = s > threshold
    X = U[:, keep] / np.sqrt(s[keep])[None, :]
    Hp = X.conj().T @ H @ X
    Hp = 0.5 * (Hp + Hp.conj().T)
    return np.linalg.eigvalsh(Hp).astype(np.float64), int(np.count_nonzero(~keep))


def shared_subspace_eigvalsh(
    pred: SparseHamiltonian,
    ref: SparseHamiltonian,
    k: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Eigenvalues of two problems at one k point in the *same* subspace: the eigenvectors
    U of the reference S_ref(k) with eigenvalue > ``threshold``.

    Solves ``U† H U c = ε U† S U c`` for (H, S) of ``pred`` and of ``ref``. A nearly
    linearly dependent basis (h-BN dzp: smallest eigenvalue of S(k) ≈ 1e-4) turns an
    error δ of H along a near-null direction of S into a spurious level at δ / λ_min, far
    below the physical ones; projecting both problems onto one subspace removes those
    directions and keeps the two spectra index-aligned (same count). Dense: for the
    evaluation of structures of up to a few thousand orbitals.

    Returns:
        ``(eps_pred, eps_ref, n_dropped)``, ascending, eV.
    """
    Hr, Sr = hamiltonian_at_k(ref, k)
    Hp, Sp = hamiltonian_at_k(pred, k)
    if Sr is None:
        raise ValueError("a shared overlap subspace needs the reference S")
    s, U = np.linalg.eigh(Sr.toarray())
    keep = s > threshold
    U = U[:, keep]

    def solve(H: sp.sparray, S: sp.sparray | None) -> np.ndarray:
        h = U.conj().T @ H.toarray() @ U
        o = np.eye(U.shape[1]) if S is None else U.conj().T @ S.toarray() @ U
        try:
            return generalized_eigvalsh(
                0.5 * (h + h.conj().T), 0.5 * (o + o.conj().T), max_size=max(h.shape[0], 1)
            )
        except np.linalg.LinAlgError:
            raise _overlap_spectrum_error(k, sp.csr_array(o)) from None

    return solve(Hp, Sp), solve(Hr, Sr), int(np.count_nonzero(~keep))


def band_energies(
    sh: SparseHamiltonian,
    kpoints: np.ndarray | Sequence[Sequence[float]],
    *,
    solver: Solver = "auto",
    dense_limit: int = DEFAULT_DENSE_LIMIT,
    n_window: int = DEFAULT_N_WINDOW,
    center: float | None = None,
    overlap_threshold: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BandStructure:
    """Eigenvalues of ``H(k) c = ε S(k) c`` at every k point (ascending per k).

    Args:
        sh: real-space H (and S; without S the basis is taken as orthonormal) blocks.
        kpoints: reduced coordinates ``[n_k, 3]``.
        solver: ``"dense"`` (all eigenvalues), ``"shift-invert"`` (the ``n_window``
            eigenvalues nearest ``center``) or ``"auto"`` (dense up to ``dense_limit``
            orbitals).
        dense_limit: largest orbital count ``"auto"`` diagonalises densely.
        n_window: eigenvalues per k point of the shift-invert window.
        center: energy (eV) the shift-invert window is centred on (e.g. E_F); required
            for the shift-invert solver. Pick a value inside a gap or between levels.
        overlap_threshold: canonical orthogonalisation (dense only): project out the
            eigenvectors of S(k) with eigenvalue ≤ threshold (see the module docstring).
        progress: optional callable ``progress(done, total)`` called after each k point.

    Returns:
        `BandStructure`.

    Raises:
        OverlapNotPositiveDefiniteError: S(k) not positive definite (without
            ``overlap_threshold``).
        ValueError: bad arguments (unknown solver, shift-invert without ``center``, an
            overlap threshold with shift-invert, a window not smaller than N).
    """
    k = np.asarray(kpoints, dtype=np.float64).reshape(-1, 3)
    if k.shape[0] == 0:
        raise ValueError("no k points given")
    if not np.all(np.isfinite(k)):
        raise ValueError("k points must be finite numbers")
    n_orb = int(sh.basis.orbital_offsets(sh.structure.numbers)[-1])
    if solver == "auto":
        solver = "dense" if n_orb <= dense_limit else "shift-invert"
    if solver not in ("dense", "shift-invert"):
        raise ValueError(f"unknown eigen solver {solver!r} (dense, shift-invert or auto)")
    if solver == "shift-invert":
        if center is None:
            raise ValueError(
                f"{n_orb} orbitals: the shift-invert window needs a centre energy "
                "(the Fermi level, say)"
            )
        if overlap_threshold is not None:
            raise ValueError("an overlap threshold needs the dense solver (S(k) eigenvectors)")
        if not 1 <= n_window < n_orb:
            raise ValueError(f"window of {n_window} eigenvalues for {n_orb} orbitals")
    if overlap_threshold is not None and not overlap_threshold > 0:
        raise ValueError(f"overlap threshold must be > 0, got {overlap_threshold}")

    rows: list[np.ndarray] = []
    dropped = np.zeros(k.shape[0], dtype=np.int64)
    for n, kk in enumerate(k):
        Hk, Sk = hamiltonian_at_k(sh, kk)
        if solver == "dense":
            if overlap_threshold is not None and Sk is not None:
                eps, dropped[n] = _canonical_eigvalsh(Hk, Sk, overlap_threshold)
            else:
                try:
                    eps = generalized_eigvalsh(Hk, Sk, max_size=max(n_orb, 1))
                except np.linalg.LinAlgError:
                    if Sk is None:  # the standard problem does not fail this way
                        raise
                    raise _overlap_spectrum_error(kk, Sk) from None
        else:
            if Sk is not None:
                n_neg = count_negative_eigenvalues(Sk)
                if n_neg:
                    raise OverlapNotPositiveDefiniteError(kk, None, n_neg)
            eps = eigvals_near(Hk, Sk, float(center), n_window)  # type: ignore[arg-type]
        rows.append(np.asarray(eps, dtype=np.float64))
        if progress is not None:
            progress(n + 1, k.shape[0])
    width = min(r.shape[0] for r in rows)
    eig = np.stack([r[:width] for r in rows])
    return BandStructure(kpoints=k, eigenvalues=eig, solver=solver, n_dropped=dropped)


# --------------------------------------------------------------------------------------------
# density of states


def gaussian_dos(
    eigenvalues: np.ndarray,
    weights: np.ndarray,
    energies: np.ndarray,
    sigma: float,
    *,
    spin_degeneracy: float = 2.0,
    chunk: int = 1 << 22,
) -> np.ndarray:
    """Gaussian-smeared density of states (states/eV per cell).

    ``DOS(E) = g_s Σ_k w_k Σ_n exp(−(E − ε_nk)² / 2σ²) / (σ √(2π))``, so that
    ``∫ DOS dE = g_s Σ_k w_k n_bands`` (with weights summing to 1: ``g_s · n_bands``).

    Args:
        eigenvalues: eV ``[n_k, n_bands]``.
        weights: k-point weights ``[n_k]``.
        energies: grid (eV) ``[n_e]``.
        sigma: Gaussian width (eV), > 0.
        spin_degeneracy: 2 for spin-paired calculations.
        chunk: largest number of (energy, state) pairs evaluated at once (memory bound).

    Returns:
        float64 ``[n_e]``.
    """
    if not sigma > 0:
        raise ValueError(f"smearing width must be > 0 eV, got {sigma}")
    eig = np.asarray(eigenvalues, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if eig.ndim != 2 or eig.shape[0] != w.shape[0]:
        raise ValueError(f"eigenvalues {eig.shape} and weights {w.shape} do not match")
    levels = eig.reshape(-1)
    lw = np.repeat(w, eig.shape[1]) * spin_degeneracy
    e = np.asarray(energies, dtype=np.float64).reshape(-1)
    out = np.zeros(e.shape[0])
    norm = 1.0 / (sigma * np.sqrt(2.0 * np.pi))
    step = max(1, chunk // max(levels.size, 1))
    for lo in range(0, e.shape[0], step):
        x = (e[lo : lo + step, None] - levels[None, :]) / sigma
        out[lo : lo + step] = norm * (np.exp(-0.5 * x * x) @ lw)
    return out
