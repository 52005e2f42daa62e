"""GPAW LCAO (periodic): converged SCF -> real-space blocks H(i, j, T), S(i, j, T).

1. SCF in LCAO mode (PAW setups, spin-paired, Fermi–Dirac smearing) on a Γ-centred k-mesh.
2. With the converged potential held fixed, GPAW builds its own Bloch matrices H(k), S(k)
   on the Fourier mesh (default: the smallest alias-free mesh for the basis range, see
   `training.datagen.realspace`) plus the off-mesh check point ``k_test``, and diagonalises
   them itself (a fixed-density calculation, symmetry off). Its eigenvalues at Γ and
   ``k_test`` are the check reference; its H(k_test), S(k_test) the element-wise one.
3. The discrete Fourier transform of the mesh matrices gives H(T), S(T), cut into atom-pair
   blocks (nearest image) and kept above the threshold.

GPAW's LCAO orbitals are already in our order (SPEC §2), its Bloch phase contains only the
lattice shift of the (wrapped) atom positions: ``H(k) = Σ_n exp(+2πi k·n) H(n)``. Positions
are wrapped into the cell along periodic axes before the SCF, as GPAW does internally, and
written that way.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from training.datagen.blocks import CodeReference, DatagenError, DFTBlocks
from training.datagen.config import GPAWSettings
from training.datagen.realspace import (
    alias_check,
    alias_free_mesh,
    mesh_kpoints,
    realspace_rows,
)

if TYPE_CHECKING:
    from pathlib import Path

    from ase import Atoms

__all__ = ["INSTALL_HINT", "check_gpaw_input", "import_gpaw", "run_gpaw"]

INSTALL_HINT = (
    "GPAW is not installed: run scripts/install_gpaw.sh (apt-get install libxc-dev "
    "libopenblas-dev; CC=g++ uv pip install gpaw==26.7.0 gpaw-data==1.2.1)"
)


_FOUND: set[tuple[str, str, str]] = set()  # (element, xc, basis) with setup and basis


def import_gpaw():  # -> module
    try:
        import gpaw
    except ImportError:
        raise DatagenError(INSTALL_HINT) from None
    return gpaw


def _setup(symbol: str, settings: GPAWSettings, where: str, atom: int):  # -> gpaw Setup
    """GPAW's PAW setup with its LCAO basis for one element, or a one-line error."""
    from gpaw.basis_data import Basis
    from gpaw.setup import create_setup
    from gpaw.xc import XC

    try:
        xc = XC(settings.xc)
    except Exception as exc:  # NameError for an unknown functional
        raise DatagenError(f"{where}: GPAW does not know the functional {settings.xc!r}") from exc
    try:
        basis = Basis.find(symbol, settings.basis)
    except Exception:  # FileNotFoundError with a multi-line hint, or a parse error
        raise DatagenError(
            f"{where}: atom {atom}: element {symbol} has no GPAW basis {settings.basis!r} "
            f"(looked in the GPAW setup paths; gpaw-data ships dzp, subsets like sz(dzp))"
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return create_setup(symbol, xc, basis=basis)
    except Exception:
        raise DatagenError(
            f"{where}: atom {atom}: element {symbol} has no GPAW PAW setup for {settings.xc}"
        ) from None


def check_gpaw_input(atoms: Atoms, settings: GPAWSettings, where: str) -> None:
    """Refuse, in one line naming ``where`` (and the atom or axis), what GPAW cannot run."""
    import_gpaw()
    if len(atoms) == 0:
        raise DatagenError(f"{where}: no atoms")
    pbc = np.asarray(atoms.pbc, bool)
    kpts = np.asarray(settings.kpts)
    if not pbc.any() and np.any(kpts != 1):
        raise DatagenError(
            f"{where}: non-periodic cell (pbc F F F) with k-points {kpts.tolist()}; "
            f"use --kpts 1 1 1 or a periodic structure"
        )
    for a in range(3):
        if not pbc[a] and kpts[a] != 1:
            raise DatagenError(
                f"{where}: cell is not periodic along {'xyz'[a]} but kpts[{a}] = {kpts[a]}; "
                f"use 1 there"
            )
        if settings.fourier_mesh is not None and not pbc[a] and settings.fourier_mesh[a] != 1:
            raise DatagenError(
                f"{where}: cell is not periodic along {'xyz'[a]} but fourier_mesh[{a}] = "
                f"{settings.fourier_mesh[a]}; use 1 there"
            )
    cell = np.asarray(atoms.cell.array, np.float64)
    if abs(np.linalg.det(cell)) < 1e-6:
        raise DatagenError(
            f"{where}: cell is singular (volume {abs(np.linalg.det(cell)):.3g} Å³); GPAW needs "
            f"a full 3-D box: give non-periodic axes a cell vector with vacuum"
        )
    for a, symbol in enumerate(atoms.get_chemical_symbols()):
        key = (symbol, settings.xc, settings.basis)
        if key not in _FOUND:  # one look-up per element and settings, not per frame
            _setup(symbol, settings, where, a)
            _FOUND.add(key)


def _cutoffs(setup: Any) -> tuple[list[int], float, float]:
    """Shell l's, largest basis-function cutoff and largest projector cutoff (Å)."""
    from ase.units import Bohr

    ells = [int(bf.l) for bf in setup.basis_functions_J]
    rc = max(float(bf.get_cutoff()) for bf in setup.basis_functions_J) * Bohr
    rp = max(float(pt.get_cutoff()) for pt in setup.pt_j) * Bohr
    return ells, rc, rp


def run_gpaw(
    atoms: Atoms, settings: GPAWSettings, where: str = "structure", log_dir: Path | None = None
) -> DFTBlocks:
    """Run the SCF and the block extraction for one structure.

    Args:
        atoms: the structure (cell with vacuum along non-periodic axes).
        settings: GPAW and threshold settings.
        where: names the input in error messages.
        log_dir: GPAW's text logs go to ``{log_dir}/{scf,nscf}.txt`` (None: no log).

    Raises:
        DatagenError: bad input or SCF not converged (one line).
    """
    check_gpaw_input(atoms, settings, where)
    gpaw = import_gpaw()
    from ase.units import Ha
    from gpaw import KohnShamConvergenceError
    from gpaw.new.ase_interface import GPAW

    work = atoms.copy()
    work.calc = None
    work.set_initial_magnetic_moments(np.zeros(len(work)))
    work.set_scaled_positions(work.get_scaled_positions(wrap=True))  # as GPAW uses them
    pbc = np.asarray(work.pbc, bool)
    txt = (lambda name: str(log_dir / name)) if log_dir is not None else (lambda name: None)

    t0, c0 = time.perf_counter(), time.process_time()
    calc = GPAW(
        mode="lcao",
        basis=settings.basis,
        xc=settings.xc,
        h=settings.h,
        kpts={"size": list(settings.kpts), "gamma": True},
        occupations={"name": "fermi-dirac", "width": settings.smearing_eV},
        convergence=dict(settings.convergence),
        maxiter=settings.maxiter,
        charge=settings.charge,
        txt=txt("scf.txt"),
    )
    work.calc = calc
    try:
        energy = float(work.get_potential_energy())
    except KohnShamConvergenceError:
        raise DatagenError(
            f"{where}: SCF not converged in {settings.maxiter} iterations "
            f"(convergence {dict(settings.convergence)}); raise maxiter or check the structure"
        ) from None
    e_fermi = float(calc.get_fermi_level())
    n_iter = int(calc.get_number_of_iterations())
    n_electrons = float(calc.get_number_of_electrons())
    ibz = np.asarray(calc.get_ibz_k_points())
    gamma_idx = np.flatnonzero(np.all(np.abs(ibz) < 1e-12, axis=1))
    eps_scf = np.asarray(calc.get_eigenvalues(kpt=int(gamma_idx[0]))) if gamma_idx.size else None
    scf_wall, scf_cpu = time.perf_counter() - t0, time.process_time() - c0

    t1, c1 = time.perf_counter(), time.process_time()
    setups = calc.dft.setups
    shells: dict[int, tuple[int, ...]] = {}
    reach = np.zeros(len(work))
    rp_max = 0.0
    sizes = []
    for a, setup in enumerate(setups):
        ells, rc, rp = _cutoffs(setup)
        z = int(work.numbers[a])
        if shells.setdefault(z, tuple(ells)) != tuple(ells):
            raise DatagenError(
                f"{where}: atom {a}: basis differs from earlier atoms of element {z}"
            )
        if sum(2 * ell + 1 for ell in ells) != int(setup.nao):
            raise DatagenError(f"{where}: atom {a}: GPAW basis size {setup.nao} != shells {ells}")
        reach[a] = rc
        rp_max = max(rp_max, rp)
        sizes.append(int(setup.nao))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    interaction_range = 2.0 * float(reach.max()) + 2.0 * rp_max
    cell = np.asarray(work.cell.array, np.float64)
    if settings.fourier_mesh is not None:
        mesh = tuple(int(n) for n in settings.fourier_mesh)
    else:
        mesh = alias_free_mesh(cell, pbc, interaction_range)
    k_mesh = mesh_kpoints(mesh)
    k_test = None
    if pbc.any():
        k_test = np.where(pbc, np.asarray(settings.k_test, np.float64), 0.0)
    k_all = k_mesh if k_test is None else np.vstack([k_mesh, k_test])

    nscf = calc.fixed_density(kpts=k_all, symmetry="off", txt=txt("nscf.txt"))
    nscf.get_potential_energy()  # diagonalises H(k) at every k with the fixed potential
    dft = nscf.dft
    matcalc = dft.scf_loop.hamiltonian.create_hamiltonian_matrix_calculator(dft.potential)
    wfs_list = list(dft.ibzwfs)
    if len(wfs_list) != len(k_all):
        raise DatagenError(f"{where}: GPAW returned {len(wfs_list)} k-points, asked {len(k_all)}")
    n_orb = int(offsets[-1])
    Hk = np.empty((len(k_all), n_orb, n_orb), np.complex128)
    Sk = np.empty((len(k_all), n_orb, n_orb), np.complex128)
    for q, wfs in enumerate(wfs_list):
        if np.abs(np.asarray(wfs.kpt_c) - k_all[q]).max() > 1e-10:
            raise DatagenError(f"{where}: GPAW reordered the k-points (k {q})")
        Hk[q] = np.asarray(matcalc.calculate_matrix(wfs).data) * Ha
        Sk[q] = np.asarray(wfs.S_MM.data)
    eps_gamma = np.asarray(nscf.get_eigenvalues(kpt=0))
    eps_ktest = np.asarray(nscf.get_eigenvalues(kpt=len(k_all) - 1)) if k_test is not None else None
    n_mesh = k_mesh.shape[0]
    rows = realspace_rows(
        Hk[:n_mesh],
        Sk[:n_mesh],
        mesh,
        k_mesh,
        work.positions,
        cell,
        pbc,
        offsets,
        settings.threshold_H_eV,
        settings.threshold_S,
    )
    alias = alias_check(
        work.positions, cell, pbc, mesh, rows.i, rows.j, rows.shift, reach, 2.0 * rp_max
    )
    alias.update(
        {
            "interaction_range_A": interaction_range,
            "max_rel_imag_of_transform": rows.max_imag,
            "half_mesh_self_rows": rows.half_mesh_self_rows,
        }
    )
    alias["ok"] = bool(alias["ok"] and rows.half_mesh_self_rows == 0 and rows.max_imag < 1e-8)
    extract_wall, extract_cpu = time.perf_counter() - t1, time.process_time() - c1

    D = work.positions[rows.j] + rows.shift @ cell - work.positions[rows.i]
    meta = {
        "code": "GPAW",
        "code_version": gpaw.__version__,
        "mode": "lcao",
        "xc": settings.xc,
        "basis": settings.basis,
        "setups": "paw (default setups of the GPAW setup path)",
        "h": settings.h,
        "kpts_scf": list(settings.kpts),
        "spin_polarized": False,
        "charge": settings.charge,
        "occupations": {"name": "fermi-dirac", "width": settings.smearing_eV},
        "convergence": dict(settings.convergence),
        "maxiter": settings.maxiter,
        "pbc": pbc.tolist(),
        "blocks_from": "Fourier transform of non-SCF H(k), S(k) on a Gamma-centred "
        f"{'x'.join(str(n) for n in mesh)} mesh evaluated with the converged SCF potential",
        "fourier_mesh": list(mesh),
        "block_threshold": {"H_eV": settings.threshold_H_eV, "S": settings.threshold_S},
        "dropped_block_max": {"H_eV": rows.dropped_max_h, "S": rows.dropped_max_s},
        "orbital_order": "GPAW real spherical harmonics, m=-l..l: p=(y,z,x), "
        "d=(xy,yz,3z2-r2,xz,x2-y2)",
        "n_electrons": n_electrons,
        "n_bands_ref": int(eps_gamma.size),
        "energy_eV": energy,
        "e_fermi_eV": e_fermi,
        "scf_iterations": n_iter,
        "max_row_distance": float(np.linalg.norm(D, axis=1).max()) if len(D) else 0.0,
        "n_self_image_rows": int(np.count_nonzero(rows.i == rows.j)),
        "k_test": None if k_test is None else k_test.tolist(),
    }
    return DFTBlocks(
        atoms=work,
        shells=shells,
        onsite_h=rows.onsite_h,
        onsite_s=rows.onsite_s,
        i=rows.i,
        j=rows.j,
        shift=rows.shift,
        hop_h=rows.hop_h,
        hop_s=rows.hop_s,
        reference=CodeReference(
            eps_gamma=eps_gamma,
            eps_gamma_scf=eps_scf,
            k_test=k_test,
            eps_ktest=eps_ktest,
            center=e_fermi,
            H_gamma=Hk[0],
            S_gamma=Sk[0],
            H_ktest=Hk[-1] if k_test is not None else None,
            S_ktest=Sk[-1] if k_test is not None else None,
        ),
        meta=meta,
        cost={
            "scf_wall_s": scf_wall,
            "scf_cpu_s": scf_cpu,
            "extract_wall_s": extract_wall,
            "extract_cpu_s": extract_cpu,
        },
        extra_checks={"fourier_mesh": alias},
    )
