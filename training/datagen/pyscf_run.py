"""PySCF (molecules): converged Kohn–Sham matrix F and overlap S -> atom-pair blocks.

Restricted Kohn–Sham with any functional and basis PySCF supports (``xc = "HF"`` runs
restricted Hartree–Fock), spherical functions. The stored H is the Kohn–Sham matrix
``F = h + J + V_xc`` built from the converged density (``mf.get_fock(dm=mf.make_rdm1())``),
S the AO overlap; both permuted from PySCF's AO order into ours (SPEC §2) with
`gears_h_core.basis.conventions.PYSCF_TO_GPAW` and cut into blocks for **all** pairs i ≠ j
(D = r_j − r_i, no threshold). Energies in eV with PySCF's own Hartree constant.

The checks compare with PySCF's own eigenvalues: ``mo_energy`` of the converged SCF and
PySCF's solver applied to the stored F, S (before conversion).
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING

import numpy as np

from gears_h_core.basis.conventions import pyscf_to_gpaw_permutation
from training.datagen.blocks import CodeReference, DatagenError, DFTBlocks
from training.datagen.config import PySCFSettings

if TYPE_CHECKING:
    from ase import Atoms

__all__ = ["check_pyscf_input", "import_pyscf", "run_pyscf"]

INSTALL_HINT = "install the [dft] extra: uv sync --frozen --extra dft"
MAX_L = 3


def import_pyscf():  # -> module
    try:
        import pyscf
    except ImportError:
        raise DatagenError(f"PySCF is not installed ({INSTALL_HINT})") from None
    return pyscf


def check_pyscf_input(atoms: Atoms, settings: PySCFSettings, where: str) -> None:
    """Refuse, in one line naming ``where`` and the atom, what PySCF cannot run.

    Periodic structures, elements without the basis, odd electron counts (spin-polarised
    systems are not supported).
    """
    import_pyscf()
    from pyscf import gto

    if any(atoms.pbc):
        axes = "".join("xyz"[a] for a in range(3) if atoms.pbc[a])
        raise DatagenError(
            f"{where}: periodic along {axes}; datagen pyscf is for molecules "
            f"(use datagen gpaw, or set pbc to F F F)"
        )
    if len(atoms) == 0:
        raise DatagenError(f"{where}: no atoms")
    seen: dict[str, int] = {}
    for a, symbol in enumerate(atoms.get_chemical_symbols()):
        if symbol in seen:
            continue
        seen[symbol] = a
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                shells = gto.basis.load(settings.basis, symbol)
        except Exception:  # PySCF raises several types for an unknown basis/element
            raise DatagenError(
                f"{where}: atom {a}: element {symbol} has no basis {settings.basis!r} in PySCF"
            ) from None
        ells = {int(shell[0]) for shell in shells}
        if ells and max(ells) > MAX_L:
            raise DatagenError(
                f"{where}: atom {a}: basis {settings.basis!r} has l={max(ells)} functions on "
                f"{symbol}; only l ≤ {MAX_L} is supported"
            )
    n_electrons = int(atoms.numbers.sum()) - settings.charge
    if n_electrons % 2 or n_electrons <= 0:
        raise DatagenError(
            f"{where}: {n_electrons} electrons (charge {settings.charge}); only closed-shell "
            f"molecules (an even, positive count) are supported"
        )


def _boxed(atoms: Atoms, box: float) -> tuple[Atoms, float]:
    """The molecule centred in a cubic box (``pbc = F F F``); box grown for big molecules."""
    out = atoms.copy()
    out.calc = None
    out.pbc = False
    extent = float(np.ptp(out.positions, axis=0).max()) if len(out) > 1 else 0.0
    side = max(box, extent + 10.0)
    out.cell = np.eye(3) * side
    out.center()
    return out, side


def _shells_per_atom(mol) -> list[list[int]]:
    """Shell angular momenta of every atom in PySCF's AO order (general contractions
    expanded: a shell with ``nctr`` contractions is ``nctr`` radial functions, each with its
    2l+1 components, contraction-major)."""
    shells: list[list[int]] = [[] for _ in range(mol.natm)]
    last = -1
    for b in range(mol.nbas):
        a = int(mol.bas_atom(b))
        if a < last:
            raise DatagenError("PySCF shells are not grouped by atom (unexpected basis layout)")
        last = a
        shells[a].extend([int(mol.bas_angular(b))] * int(mol.bas_nctr(b)))
    slices = mol.aoslice_by_atom()
    for a, ells in enumerate(shells):
        n = sum(2 * ell + 1 for ell in ells)
        if n != int(slices[a, 3] - slices[a, 2]):
            raise DatagenError(f"atom {a}: PySCF AO count {slices[a, 3] - slices[a, 2]} != {n}")
    return shells


def run_pyscf(atoms: Atoms, settings: PySCFSettings, where: str = "structure") -> DFTBlocks:
    """Run the SCF for one molecule and return its blocks in our orbital order.

    Raises:
        DatagenError: bad input or SCF not converged (one line naming ``where``).
    """
    check_pyscf_input(atoms, settings, where)
    pyscf = import_pyscf()
    from pyscf import dft, gto, scf
    from pyscf.data.nist import HARTREE2EV

    boxed, side = _boxed(atoms, settings.box_A)
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mol = gto.M(
            atom=[
                (s, tuple(p))
                for s, p in zip(boxed.get_chemical_symbols(), boxed.positions, strict=True)
            ],
            basis=settings.basis,
            unit="Angstrom",
            charge=settings.charge,
            spin=0,
            cart=False,
            verbose=0,
        )
    hf = settings.xc.strip().upper() == "HF"
    if hf:
        mf = scf.RHF(mol)
    else:
        mf = dft.RKS(mol)
        mf.xc = settings.xc
        mf.grids.level = settings.grids_level
    mf.conv_tol = settings.conv_tol_Ha
    mf.max_cycle = settings.max_cycle
    mf.verbose = 0
    try:
        energy = float(mf.kernel())
    except (KeyError, ValueError, RuntimeError) as exc:  # e.g. unknown functional name
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatagenError(f"{where}: PySCF failed: {msg}") from exc
    if not mf.converged:
        raise DatagenError(
            f"{where}: SCF not converged in {settings.max_cycle} cycles "
            f"(conv_tol {settings.conv_tol_Ha:g} Ha); raise max_cycle or check the geometry"
        )
    scf_wall, scf_cpu = time.perf_counter() - t0, time.process_time() - c0

    t1, c1 = time.perf_counter(), time.process_time()
    dm = mf.make_rdm1()
    fock = np.asarray(mf.get_fock(dm=dm))
    ovlp = np.asarray(mf.get_ovlp())
    eps_solver = np.sort(np.asarray(mf.eig(fock, ovlp)[0])) * HARTREE2EV
    mo_energy = np.sort(np.asarray(mf.mo_energy)) * HARTREE2EV

    shells = _shells_per_atom(mol)
    perm_l, sign_l, offsets = [], [], [0]
    for ells in shells:
        p, s = pyscf_to_gpaw_permutation(ells)
        perm_l.append(p + offsets[-1])
        sign_l.append(s)
        offsets.append(offsets[-1] + p.size)
    perm = np.concatenate(perm_l)
    sign = np.concatenate(sign_l)
    outer = sign[:, None] * sign[None, :]
    H = fock[np.ix_(perm, perm)] * outer * HARTREE2EV  # ours = sign · theirs[perm]
    S = ovlp[np.ix_(perm, perm)] * outer

    by_z: dict[int, tuple[int, ...]] = {}
    for a, z in enumerate(boxed.numbers):
        ells_t = tuple(shells[a])
        if by_z.setdefault(int(z), ells_t) != ells_t:
            raise DatagenError(
                f"{where}: atom {a}: element {boxed.get_chemical_symbols()[a]} has a different "
                f"basis than earlier atoms of the same element (one basis per element needed)"
            )
    n_atoms = len(boxed)
    sl = [slice(offsets[a], offsets[a + 1]) for a in range(n_atoms)]
    onsite_h = [H[sl[a], sl[a]].copy() for a in range(n_atoms)]
    onsite_s = [S[sl[a], sl[a]].copy() for a in range(n_atoms)]
    rows_i, rows_j, hop_h, hop_s = [], [], [], []
    for i in range(n_atoms):
        for j in range(n_atoms):
            if i == j:
                continue
            rows_i.append(i)
            rows_j.append(j)
            # F and S are symmetric to round-off; cut (j, i) as the exact transpose of (i, j)
            a, b = (i, j) if i < j else (j, i)
            bh, bs = H[sl[a], sl[b]], S[sl[a], sl[b]]
            hop_h.append(bh.copy() if i < j else bh.T.copy())
            hop_s.append(bs.copy() if i < j else bs.T.copy())
    for a in range(n_atoms):  # on-site blocks exactly symmetric as well
        onsite_h[a] = 0.5 * (onsite_h[a] + onsite_h[a].T)
        onsite_s[a] = 0.5 * (onsite_s[a] + onsite_s[a].T)
    n_occ = mol.nelectron // 2
    homo = float(mo_energy[n_occ - 1])
    lumo = float(mo_energy[n_occ]) if n_occ < mo_energy.size else None
    extract_wall, extract_cpu = time.perf_counter() - t1, time.process_time() - c1

    meta = {
        "code": "PySCF",
        "code_version": pyscf.__version__,
        "method": "RHF" if hf else "RKS",
        "xc": settings.xc,
        "basis": settings.basis,
        "cartesian": False,
        "grids_level": None if hf else settings.grids_level,
        "conv_tol_Ha": settings.conv_tol_Ha,
        "max_cycle": settings.max_cycle,
        "spin_polarized": False,
        "charge": settings.charge,
        "pbc": [False, False, False],
        "box_A": side,
        "H_definition": "Kohn-Sham matrix F = h + J + V_xc built from the converged density "
        "(mf.get_fock(dm=mf.make_rdm1()))",
        "hartree_to_eV": HARTREE2EV,
        "orbital_order": "converted to GPAW real spherical harmonics, m=-l..l: p=(y,z,x), "
        "d=(xy,yz,3z2-r2,xz,x2-y2)",
        "block_threshold": None,
        "pairs": "all i != j",
        "n_electrons": int(mol.nelectron),
        "energy_eV": energy * HARTREE2EV,
        "scf_iterations": int(getattr(mf, "cycles", -1)),
        "homo_eV": homo,
        "lumo_eV": lumo,
    }
    return DFTBlocks(
        atoms=boxed,
        shells=by_z,
        onsite_h=onsite_h,
        onsite_s=onsite_s,
        i=np.asarray(rows_i, np.int64),
        j=np.asarray(rows_j, np.int64),
        shift=np.zeros((len(rows_i), 3), np.int64),
        hop_h=hop_h,
        hop_s=hop_s,
        reference=CodeReference(
            eps_gamma=eps_solver,
            eps_gamma_scf=mo_energy,
            k_test=None,
            eps_ktest=None,
            center=homo if lumo is None else 0.5 * (homo + lumo),
            homo=homo,
            lumo=lumo,
            H_gamma=0.5 * (H + H.T),
            S_gamma=0.5 * (S + S.T),
        ),
        meta=meta,
        cost={
            "scf_wall_s": scf_wall,
            "scf_cpu_s": scf_cpu,
            "extract_wall_s": extract_wall,
            "extract_cpu_s": extract_cpu,
        },
    )
