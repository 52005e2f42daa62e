"""Structure sampling: distorted periodic cells and thermal normal-mode samples of molecules.

Every sample is drawn from its own seed (``numpy.random.default_rng(seed)``) and returns a
JSON-able record of the seed, the parameters and every random value drawn, so the structure
can be rebuilt exactly. `write_samples` stores the record in each frame's
``atoms.info["gears_h_sampling"]`` (a JSON string, as extended XYZ holds only flat values);
``gears_h datagen`` copies it into ``meta.json`` → ``geometry`` and ``seed``.

* `distort_periodic`: homogeneous strain of the periodic axes, a smooth out-of-plane ripple
  of commensurate plane waves (2-D sheets: exactly one non-periodic axis), and a Gaussian
  rattle of all coordinates — the recipe of the shipped h-BN and MoS2 sets
  (``shared/data/README.md`` §4.1–4.2).
* `thermal_normal_modes`: displacements along the vibrational normal modes of a Hessian
  with the quantum-harmonic thermal distribution at a temperature drawn from a range (the
  recipe of the shipped butanol set, §4.3). `pyscf_hessian` computes the Hessian, at a
  minimum found by `pyscf_relax` (geomeTRIC, or ASE's BFGS without it, on PySCF
  gradients) when the input is not one.

Geometries with two atoms closer than ``min_contact`` × the sum of their covalent radii
are rejected and redrawn from the same random stream (the number of attempts is recorded).
"""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ase import Atoms

__all__ = [
    "INFO_KEY",
    "distort_periodic",
    "hbn_supercell",
    "pyscf_hessian",
    "pyscf_relax",
    "sampling_record",
    "thermal_normal_modes",
    "write_samples",
]

INFO_KEY = "gears_h_sampling"
MAX_ATTEMPTS = 100


def _no_file_config(*_args: Any, **_kwargs: Any) -> None:
    """Stands in for `logging.config.fileConfig` while geomeTRIC runs."""


def _too_close(atoms: Atoms, min_contact: float) -> bool:
    """Any two atoms (periodic images included) closer than min_contact × Σ covalent radii."""
    from ase.data import covalent_radii
    from ase.neighborlist import neighbor_list

    radii = covalent_radii[atoms.numbers]
    cutoff = float(2.0 * radii.max() * min_contact) + 1e-9
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    return bool(np.any(d < min_contact * (radii[i] + radii[j])))


def hbn_supercell(n: int = 5, a0: float = 2.51, height: float = 11.0) -> Atoms:
    """Flat h-BN n×n supercell (B then N per cell), ``pbc = T T F``, centred along z."""
    from ase import Atoms

    cell = np.array([[a0, 0.0, 0.0], [-0.5 * a0, 0.5 * np.sqrt(3.0) * a0, 0.0], [0, 0, height]])
    prim = Atoms(
        "BN",
        scaled_positions=[[0.0, 0.0, 0.5], [1 / 3, 2 / 3, 0.5]],
        cell=cell,
        pbc=[True, True, False],
    )
    return prim.repeat((n, n, 1))


def distort_periodic(
    atoms: Atoms,
    seed: int,
    *,
    strain: float = 0.02,
    ripple: float = 0.25,
    n_waves: int = 3,
    max_wave_index: int = 2,
    rattle: tuple[float, float] = (0.02, 0.10),
    min_contact: float = 0.6,
) -> tuple[Atoms, dict[str, Any]]:
    """Strain, ripple and rattle a periodic cell.

    Args:
        atoms: the ideal cell (periodic along at least one axis).
        seed: the sample's seed.
        strain: each component of the symmetric strain of the periodic axes is uniform in
            ±strain.
        ripple: total ripple amplitude (Σ of the wave amplitudes) uniform in [0, ripple] Å;
            only for sheets (exactly one non-periodic axis; else no ripple).
        n_waves: plane waves of the ripple, each ``cos(2π(h s_a + k s_b) + φ)`` with integer
            (h, k) in ±max_wave_index (commensurate with the cell), weight uniform in [0, 1]
            and phase uniform in [0, 2π), displacing atoms along the sheet normal.
        rattle: Gaussian σ (Å) of the rattle of every coordinate, uniform in this range.
        min_contact: rejection criterion (fraction of the covalent-radius sum).

    Returns:
        ``(atoms, record)``.
    """
    pbc = np.asarray(atoms.pbc, bool)
    if not pbc.any():
        raise ValueError("distort_periodic needs a periodic structure")
    rng = np.random.default_rng(seed)
    per = np.flatnonzero(pbc)
    sheet = per.size == 2
    for attempt in range(1, MAX_ATTEMPTS + 1):
        out = atoms.copy()
        out.calc = None
        # strain: symmetric tensor on the periodic axes, in Cartesian coordinates of them
        basis = atoms.cell.array[per]  # periodic vectors [k, 3]
        q, _ = np.linalg.qr(basis.T)  # orthonormal frame of the periodic subspace [3, k]
        eps = rng.uniform(-strain, strain, size=(per.size, per.size))
        eps = np.triu(eps) + np.triu(eps, 1).T
        deform = np.eye(3) + q @ eps @ q.T
        out.set_cell(atoms.cell.array @ deform.T, scale_atoms=True)
        record: dict[str, Any] = {
            "method": "strain + ripple + rattle",
            "seed": int(seed),
            "strain_tensor": eps.tolist(),
            "strain_axes": per.tolist(),
        }
        if sheet:
            amp = float(rng.uniform(0.0, ripple))
            waves = []
            for _ in range(n_waves):
                while True:
                    hk = rng.integers(-max_wave_index, max_wave_index + 1, size=2)
                    if np.any(hk):
                        break
                waves.append(
                    [int(hk[0]), int(hk[1]), float(rng.uniform()), float(rng.uniform(0, 2 * np.pi))]
                )
            weights = np.array([w[2] for w in waves])
            scale = float(amp / weights.sum()) if weights.sum() > 0 else 0.0
            s = out.get_scaled_positions(wrap=False)[:, per]  # [n, 2]
            dz = sum(
                scale * w * np.cos(2 * np.pi * (h * s[:, 0] + k * s[:, 1]) + ph)
                for h, k, w, ph in waves
            )
            normal = np.cross(out.cell.array[per[0]], out.cell.array[per[1]])
            normal /= np.linalg.norm(normal)
            out.positions = out.positions + np.outer(dz, normal)
            record.update(ripple_amplitude=amp, ripple_waves=waves, ripple_scale=scale)
        sigma = float(rng.uniform(*rattle))
        out.positions = out.positions + rng.normal(0.0, sigma, size=out.positions.shape)
        record.update(
            rattle_sigma=sigma,
            parameters={
                "strain": strain,
                "ripple": ripple if sheet else 0.0,
                "n_waves": n_waves if sheet else 0,
                "max_wave_index": max_wave_index,
                "rattle": list(rattle),
                "min_contact": min_contact,
            },
            attempts=attempt,
        )
        if not _too_close(out, min_contact):
            return out, record
    raise ValueError(f"seed {seed}: no acceptable geometry in {MAX_ATTEMPTS} draws")


def _rigid_vectors(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Orthonormal mass-weighted translations and rotations ``[3n, k]`` (k = 5 or 6)."""
    sqm = np.sqrt(masses)
    com = (masses[:, None] * positions).sum(0) / masses.sum()
    r = positions - com
    vecs = []
    for a in range(3):
        t = np.zeros_like(positions)
        t[:, a] = 1.0
        vecs.append((t * sqm[:, None]).reshape(-1))
    for a in range(3):
        axis = np.zeros(3)
        axis[a] = 1.0
        vecs.append((np.cross(axis, r) * sqm[:, None]).reshape(-1))
    u, sv, _ = np.linalg.svd(np.array(vecs).T, full_matrices=False)
    return u[:, sv > 1e-6 * sv.max()]


def thermal_normal_modes(
    atoms: Atoms,
    hessian: np.ndarray,
    seed: int,
    *,
    temperature: tuple[float, float] = (300.0, 700.0),
    quantum: bool = True,
    min_contact: float = 0.6,
    reference: str = "input geometry",
) -> tuple[Atoms, dict[str, Any]]:
    """Displace a molecule along its normal modes with the thermal distribution.

    Each vibrational mode (rigid translations/rotations projected out; modes with ω² ≤ 0,
    i.e. a geometry that is not a minimum, are left out and counted) gets a mass-weighted
    amplitude q ~ N(0, ⟨q²⟩) with ⟨q²⟩ = (ħω/2)·coth(ħω/2kT)/ω² (quantum) or kT/ω²
    (classical), T uniform in ``temperature``.

    Args:
        atoms: the reference geometry (ideally a minimum).
        hessian: ``[3n, 3n]`` in eV/Å² at that geometry.
        seed: the sample's seed.

    Returns:
        ``(atoms, record)``.
    """
    from ase import units

    n = len(atoms)
    hess = np.asarray(hessian, np.float64)
    if hess.shape != (3 * n, 3 * n):
        raise ValueError(f"hessian: expected shape ({3 * n}, {3 * n}), got {hess.shape}")
    masses = atoms.get_masses()
    m3 = np.repeat(masses, 3)
    hm = 0.5 * (hess + hess.T) / np.sqrt(np.outer(m3, m3))  # eV/(Å² amu)
    rigid = _rigid_vectors(atoms.positions, masses)
    proj = np.eye(3 * n) - rigid @ rigid.T
    w2, vecs = np.linalg.eigh(proj @ hm @ proj)
    # weight of each eigenvector in the rigid subspace
    overlap = np.sum((rigid.T @ vecs) ** 2, axis=0) if rigid.size else np.zeros(w2.size)
    vib = overlap < 0.5
    soft = vib & (w2 <= 1e-8)
    use = vib & ~soft
    # ħω in eV from ω² in eV/(Å² amu)
    hbar_omega = units._hbar * np.sqrt(np.clip(w2[use], 0, None) * units._e / (1e-20 * units._amu))
    hbar_omega /= units._e
    rng = np.random.default_rng(seed)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        temp = float(rng.uniform(*temperature))
        kt = units.kB * temp
        if quantum:
            energy = 0.5 * hbar_omega / np.tanh(hbar_omega / (2.0 * kt))
        else:
            energy = np.full(hbar_omega.shape, kt)
        q = rng.normal(0.0, 1.0, size=hbar_omega.size) * np.sqrt(energy / w2[use])
        disp = (vecs[:, use] @ q) / np.sqrt(m3)
        out = atoms.copy()
        out.calc = None
        out.positions = atoms.positions + disp.reshape(n, 3)
        if not _too_close(out, min_contact):
            wavenumbers = hbar_omega / units.invcm
            record = {
                "method": "thermal normal modes" + (" (quantum)" if quantum else " (classical)"),
                "seed": int(seed),
                "temperature_K": temp,
                "T_range_K": list(temperature),
                "n_modes_sampled": int(use.sum()),
                "n_modes_skipped_not_minimum": int(soft.sum()),
                "lowest_mode_cm-1": float(wavenumbers.min()) if wavenumbers.size else None,
                "max_displacement_A": float(np.linalg.norm(disp.reshape(n, 3), axis=1).max()),
                "reference": reference,
                "min_contact": min_contact,
                "attempts": attempt,
            }
            return out, record
    raise ValueError(f"seed {seed}: no acceptable geometry in {MAX_ATTEMPTS} draws")


def _pyscf_rks(atoms: Atoms, xc: str, basis: str, charge: int):  # -> pyscf SCF object
    """A tightly converged restricted Kohn–Sham (or RHF for ``xc = "HF"``) object of ``atoms``."""
    from pyscf import dft, gto, scf

    mol = gto.M(
        atom=[
            (s, tuple(p))
            for s, p in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)
        ],
        basis=basis,
        unit="Angstrom",
        charge=charge,
        verbose=0,
    )
    if xc.strip().upper() == "HF":
        mf = scf.RHF(mol)
    else:
        mf = dft.RKS(mol)
        mf.xc = xc
    mf.conv_tol = 1e-11
    return mf


def pyscf_hessian(atoms: Atoms, xc: str, basis: str, charge: int = 0) -> np.ndarray:
    """Analytic PySCF Hessian (RKS, or RHF for ``xc = "HF"``) in eV/Å², ``[3n, 3n]``."""
    from ase.units import Bohr, Ha

    mf = _pyscf_rks(atoms, xc, basis, charge)
    mf.kernel()
    if not mf.converged:
        raise ValueError("Hessian: SCF not converged")
    h = np.asarray(mf.Hessian().kernel())  # [n, n, 3, 3] Ha/Bohr²
    n = len(atoms)
    return h.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) * Ha / Bohr**2


def pyscf_relax(
    atoms: Atoms,
    xc: str,
    basis: str,
    *,
    fmax: float = 1e-3,
    steps: int = 300,
    charge: int = 0,
    optimizer: str | None = None,
) -> tuple[Atoms, dict[str, Any]]:
    """Relax a molecule to a minimum on analytic PySCF gradients.

    A Hessian gives normal modes only at a minimum: elsewhere the forces shift every sample
    and soft modes turn imaginary (and are skipped). ``optimizer``: ``"geometric"``
    (geomeTRIC in internal coordinates, from the ``[dft]`` extra; what the shipped butanol
    reference used, a few tens of steps), ``"bfgs"`` (ASE's Cartesian BFGS; many more steps on
    soft torsions) or None (geomeTRIC when installed). The largest force of the result is
    recomputed with one more SCF and must be below ``fmax``.

    Returns:
        ``(relaxed atoms, record)``, the record holding the optimiser, ``fmax``, the largest
        remaining force (eV/Å), the number of gradient evaluations and the energy (eV).

    Raises:
        ValueError: an SCF did not converge, or ``steps`` were not enough.
    """
    from ase.units import Bohr, Ha

    if optimizer is None:
        try:
            import geometric  # noqa: F401

            optimizer = "geometric"
        except ImportError:
            optimizer = "bfgs"
    if optimizer == "geometric":
        positions, n_grad = _relax_geometric(atoms, xc, basis, fmax, steps, charge)
    elif optimizer == "bfgs":
        positions, n_grad = _relax_bfgs(atoms, xc, basis, fmax, steps, charge)
    else:
        raise ValueError(f"optimizer {optimizer!r}: expected 'geometric' or 'bfgs'")
    out = atoms.copy()
    out.calc = None
    out.positions = positions
    mf = _pyscf_rks(out, xc, basis, charge)
    energy = mf.kernel()
    if not mf.converged:
        raise ValueError("relaxation: SCF not converged at the final geometry")
    forces = np.asarray(mf.nuc_grad_method().kernel()) * Ha / Bohr
    remaining = float(np.linalg.norm(forces, axis=1).max())
    if remaining > fmax:
        raise ValueError(
            f"relaxation ({optimizer}): largest force {remaining:.2g} eV/Å > {fmax:g} "
            f"after {n_grad} gradient evaluations (at most {steps} steps)"
        )
    record = {
        "method": f"{optimizer} on PySCF {xc}/{basis} gradients",
        "fmax_eV_per_A": fmax,
        "final_max_force_eV_per_A": remaining,
        "gradient_evaluations": n_grad,
        "energy_eV": float(energy) * Ha,
    }
    return out, record


def _relax_geometric(
    atoms: Atoms, xc: str, basis: str, fmax: float, steps: int, charge: int
) -> tuple[np.ndarray, int]:
    """geomeTRIC through PySCF; converged when the largest and the RMS force are below
    ``fmax`` (its energy and step criteria tightened to match)."""
    from ase.units import Bohr, Ha
    from pyscf.geomopt.geometric_solver import optimize

    mf = _pyscf_rks(atoms, xc, basis, charge)
    n_grad = 0

    def count(_env: dict[str, Any]) -> None:
        nonlocal n_grad
        n_grad += 1

    gmax = fmax / (Ha / Bohr)  # Ha/Bohr
    conv = {
        "convergence_energy": 1e-8,
        "convergence_grms": gmax / 1.5,
        "convergence_gmax": gmax,
        "convergence_drms": 1e-4,
        "convergence_dmax": 2e-4,
    }
    # geomeTRIC calls logging.config.fileConfig on an ini file of its own, which closes
    # every handler of the process (a CLI's or pytest's among them) and sends its banner and
    # step log to stderr; it is skipped for the call, so geomeTRIC's INFO records reach the
    # root logger's handlers and level like any library's
    file_config = logging.config.fileConfig
    logging.config.fileConfig = _no_file_config
    try:
        mol = optimize(mf, maxsteps=steps, callback=count, **conv)
    except RuntimeError as exc:  # not converged in maxsteps
        raise ValueError(f"relaxation (geomeTRIC): {str(exc).splitlines()[0]}") from None
    finally:
        logging.config.fileConfig = file_config
    return np.asarray(mol.atom_coords(unit="Angstrom")), n_grad


def _relax_bfgs(
    atoms: Atoms, xc: str, basis: str, fmax: float, steps: int, charge: int
) -> tuple[np.ndarray, int]:
    """ASE's BFGS on PySCF forces, each SCF started from the previous density."""
    from ase.calculators.calculator import Calculator, all_changes
    from ase.optimize import BFGS
    from ase.units import Bohr, Ha

    class _PySCFForces(Calculator):
        implemented_properties = ("energy", "forces")

        def __init__(self) -> None:
            super().__init__()
            self._dm = None
            self.n_grad = 0

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            mf = _pyscf_rks(self.atoms, xc, basis, charge)
            energy = mf.kernel(dm0=self._dm)
            if not mf.converged:
                raise ValueError("relaxation: SCF not converged")
            self._dm = mf.make_rdm1()
            grad = np.asarray(mf.nuc_grad_method().kernel())  # Ha/Bohr
            self.n_grad += 1
            self.results = {"energy": float(energy) * Ha, "forces": -grad * Ha / Bohr}

    work = atoms.copy()
    calc = _PySCFForces()
    work.calc = calc
    BFGS(work, logfile=None, maxstep=0.1).run(fmax=fmax, steps=steps)
    return work.positions.copy(), calc.n_grad


def sampling_record(atoms: Atoms) -> dict[str, Any] | None:
    """The record `write_samples` stored in a frame, or None."""
    raw = atoms.info.get(INFO_KEY)
    if raw is None:
        return None
    try:
        rec = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def write_samples(path: str | Path, samples: Sequence[tuple[Atoms, dict[str, Any]]]) -> Path:
    """Write samples as one multi-frame extended XYZ, records in ``info[INFO_KEY]``."""
    from ase.io import write

    frames = []
    for atoms, record in samples:
        a = atoms.copy()
        a.info = {INFO_KEY: json.dumps(record, separators=(",", ":"))}
        frames.append(a)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    write(tmp, frames, format="extxyz")
    tmp.replace(out)
    return out
