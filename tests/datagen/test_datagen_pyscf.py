"""``gears_h datagen pyscf``: water -> snapshot folder that the project's reader loads, whose
assembled eigenvalues equal an independent PySCF run's; the PySCF -> GPAW orbital order
proven by rotating the molecule (Wigner matrices) and by a known orientation; bad inputs give
one line and write nothing; failed checks go to .bad with exit 1; resume skips; the pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from datagen_cli_kit import nothing_written, one_line_error
from optional_tools import require_module

from training.cli import main

WATER = Atoms("OH2", positions=[[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]])


@pytest.fixture(scope="module")
def pyscf():
    return require_module("pyscf")


def test_water_snapshot_reads_back_and_matches_pyscf(pyscf, tmp_path: Path) -> None:
    from pyscf import dft, gto
    from pyscf.data.nist import HARTREE2EV

    from gears_h_core.assemble.eigen import generalized_eigvalsh
    from gears_h_core.assemble.sparse import gamma_fold
    from training.data.snapshot import read_snapshot

    src = tmp_path / "water.xyz"
    write(src, WATER)
    out = tmp_path / "data"
    assert main(["datagen", "pyscf", str(src), "-o", str(out), "--basis", "def2-svp"]) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["water"]
    ls = read_snapshot(out / "water")
    sh = ls.hamiltonian
    assert ls.meta["checks"]["ok"] is True
    assert ls.meta["checks"]["S_positive_definite"] is True
    assert ls.meta["code"] == "PySCF" and ls.meta["xc"] == "PBE" and ls.meta["basis"] == "def2-svp"
    assert ls.meta["settings"]["conv_tol_Ha"] == 1e-12
    assert ls.meta["n_offdiag_rows"] == 6  # all pairs i != j
    assert sh.basis.shells == {1: (0, 0, 1), 8: (0, 0, 0, 1, 1, 2)}
    assert not any(sh.structure.pbc)

    # an independent PySCF run at the written geometry
    mol = gto.M(
        atom=[(s, tuple(p)) for s, p in zip(("O", "H", "H"), sh.structure.positions, strict=True)],
        basis="def2-svp",
        unit="Angstrom",
        verbose=0,
    )
    mf = dft.RKS(mol)
    mf.xc = "PBE"
    mf.conv_tol = 1e-12
    mf.kernel()
    ref = np.sort(mf.mo_energy) * HARTREE2EV
    numbers = sh.structure.numbers
    H = gamma_fold(sh.H, sh.basis, numbers).toarray()
    S = gamma_fold(sh.S, sh.basis, numbers).toarray()
    eps = generalized_eigvalsh(H, S)
    near = np.abs(ref - 0.5 * (ref[4] + ref[5])) < 10.0
    assert np.abs(eps - ref)[near].max() < 1e-4
    assert np.abs(eps - ref).max() < 1e-3  # core levels: float32 storage of ≈ −500 eV
    stored = np.load(out / "water" / "ref_eigenvalues.npz")
    np.testing.assert_allclose(stored["eps_gamma_scf"], ref, atol=1e-6)


def _pyscf_blocks(atoms: Atoms, basis: str = "def2-svp"):
    from training.datagen.config import PySCFSettings
    from training.datagen.pyscf_run import run_pyscf

    return run_pyscf(atoms, PySCFSettings(xc="HF", basis=basis, conv_tol_Ha=1e-11))


def test_orbital_order_by_rotation(pyscf) -> None:
    """Rotating the molecule rotates every block as W_i H_ij W_jᵀ (our Wigner matrices,
    p = (y, z, x)); PySCF's own (x, y, z) order, or any other, fails this."""
    from scipy.spatial.transform import Rotation

    from gears_h_core.basis.conventions import wigner_for_shells

    R = Rotation.from_euler("zyx", [0.7, -1.1, 0.4]).as_matrix()
    rotated = WATER.copy()
    rotated.positions = WATER.positions @ R.T
    a = _pyscf_blocks(WATER)
    b = _pyscf_blocks(rotated)
    W = {z: wigner_for_shells(ells, R) for z, ells in a.shells.items()}
    numbers = WATER.numbers
    worst = 0.0
    for r in range(len(a.i)):
        i, j = int(a.i[r]), int(a.j[r])
        assert (int(b.i[r]), int(b.j[r])) == (i, j)
        want = W[numbers[i]] @ a.hop_h[r] @ W[numbers[j]].T
        worst = max(worst, float(np.abs(b.hop_h[r] - want).max()))
        np.testing.assert_allclose(
            b.hop_s[r], W[numbers[i]] @ a.hop_s[r] @ W[numbers[j]].T, atol=1e-7
        )
    for at in range(3):
        want = W[numbers[at]] @ a.onsite_h[at] @ W[numbers[at]].T
        worst = max(worst, float(np.abs(b.onsite_h[at] - want).max()))
    assert worst < 1e-5, worst  # eV; HF integrals are exactly rotation-covariant

    # the same comparison in PySCF's native p order breaks down: the test has teeth
    xyz = np.array([2, 0, 1])  # ours (y, z, x) -> (x, y, z)
    o_p = slice(3, 6)  # O: s s s p p d -> first p shell at orbitals 3..5
    r = next(r for r in range(len(a.i)) if a.i[r] == 0)  # an O–H row
    wrong_a = a.hop_h[r][o_p][xyz]
    wrong_b = b.hop_h[r][o_p][xyz]
    Wp = W[8][o_p, o_p]
    assert np.abs(wrong_b - Wp @ wrong_a @ W[1].T).max() > 1e-2


def test_orbital_order_known_orientation(pyscf) -> None:
    """O at the origin, H on +x: the O p–H s hopping lives in p_x, the third of (y, z, x)."""
    hx = Atoms("OH", positions=[[0.0, 0.0, 0.0], [0.97, 0.0, 0.0]])
    hx_y = Atoms("OH", positions=[[0.0, 0.0, 0.0], [0.0, 0.97, 0.0]])
    from training.datagen.config import PySCFSettings
    from training.datagen.pyscf_run import run_pyscf

    for atoms, axis in ((hx, 2), (hx_y, 0)):
        blocks = run_pyscf(atoms, PySCFSettings(xc="HF", basis="sto-3g", charge=-1))
        r = next(r for r in range(len(blocks.i)) if blocks.i[r] == 0)
        p_to_s = blocks.hop_s[r][2:5, 0]  # O sto-3g: 1s 2s 2p(y, z, x); H: 1s
        assert np.argmax(np.abs(p_to_s)) == axis
        assert p_to_s[axis] > 0.1  # + lobe towards H: no Condon–Shortley sign
        assert np.abs(np.delete(p_to_s, axis)).max() < 1e-10


def test_unknown_element_for_basis(pyscf, tmp_path: Path, capsys) -> None:
    src = tmp_path / "rn.xyz"
    write(src, Atoms("HRn", positions=[[0, 0, 0], [0, 0, 2.0]]))
    out = tmp_path / "out"
    msg = one_line_error(
        capsys, ["datagen", "pyscf", str(src), "-o", str(out), "--basis", "sto-3g"]
    )
    assert str(src) in msg and "atom 1" in msg and "Rn" in msg and "sto-3g" in msg
    nothing_written(out)


def test_scf_not_converged(pyscf, tmp_path: Path, capsys) -> None:
    src = tmp_path / "water.xyz"
    write(src, WATER)
    out = tmp_path / "out"
    msg = one_line_error(
        capsys,
        ["datagen", "pyscf", str(src), "-o", str(out), "--basis", "sto-3g", "--max-cycle", "1"],
    )
    assert str(src) in msg and "SCF not converged" in msg
    nothing_written(out)


def test_periodic_input_refused(pyscf, tmp_path: Path, capsys) -> None:
    src = tmp_path / "cell.extxyz"
    write(src, Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[3, 3, 3], pbc=True))
    out = tmp_path / "out"
    msg = one_line_error(capsys, ["datagen", "pyscf", str(src), "-o", str(out)])
    assert "periodic" in msg and "datagen gpaw" in msg
    nothing_written(out)


def test_failed_check_goes_to_bad_and_exits_1(pyscf, tmp_path: Path, capsys) -> None:
    src = tmp_path / "h2.xyz"
    write(src, Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
    cfg = tmp_path / "strict.yaml"
    cfg.write_text("basis: sto-3g\nchecks: {eig_tol_eV: 1.0e-14}\n")  # float32 cannot meet it
    out = tmp_path / "out"
    assert main(["datagen", "pyscf", str(src), "-o", str(out), "--config", str(cfg)]) == 1
    assert "checks failed" in capsys.readouterr().err
    assert not (out / "h2").exists()
    meta = json.loads((out / ".bad" / "h2" / "meta.json").read_text())
    assert meta["checks"]["ok"] is False and meta["checks"]["failed"]


def test_resume_and_pool(pyscf, tmp_path: Path, capsys) -> None:
    from training.datagen.sampling import write_samples

    frames = [
        (Atoms("H2", positions=[[0, 0, 0], [0, 0, d]]), {"method": "test", "seed": k})
        for k, d in enumerate((0.72, 0.76))
    ]
    src = write_samples(tmp_path / "h2s.extxyz", frames)
    out = tmp_path / "out"
    argv = ["datagen", "pyscf", str(src), "-o", str(out), "--basis", "sto-3g", "-j", "2"]
    assert main(argv) == 0
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["h2s_0000", "h2s_0001"]
    meta = json.loads((out / "h2s_0001" / "meta.json").read_text())
    assert meta["seed"] == 1 and meta["geometry"]["method"] == "test"
    assert meta["input"] == {"file": str(src), "frame": 1}
    assert meta["cost"]["threads"] == 1
    stamp = (out / "h2s_0000" / "meta.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv[:-2]) == 0  # again, in-process: both finished, skipped
    assert capsys.readouterr().err.count("finished earlier, skipped") == 2
    assert (out / "h2s_0000" / "meta.json").stat().st_mtime_ns == stamp


def test_sample_modes_cli(pyscf, tmp_path: Path) -> None:
    """Thermal normal-mode samples from a PySCF Hessian: the 3 vibrations of water, rigid
    motions left out, seeds recorded per frame."""
    from ase.io import read

    from training.datagen.sampling import sampling_record

    src = tmp_path / "water.xyz"
    write(src, WATER)
    out = tmp_path / "s.extxyz"
    argv = ["datagen", "sample", "modes", str(src), "-o", str(out), "-n", "2", "--seed", "9"]
    assert main([*argv, "--xc", "HF", "--basis", "sto-3g"]) == 0
    frames = read(out, index=":")
    recs = [sampling_record(f) for f in frames]
    assert [r["seed"] for r in recs] == [9, 10]
    assert all(r["n_modes_sampled"] + r["n_modes_skipped_not_minimum"] == 3 for r in recs)
    for f in frames:
        d = f.positions - WATER.positions
        assert np.abs((WATER.get_masses()[:, None] * d).sum(0)).max() < 1e-6  # extxyz: 1e-8 Å
        assert 0 < np.linalg.norm(d, axis=1).max() < 0.5


def test_sample_modes_relax_reaches_a_minimum(pyscf, tmp_path: Path, capsys) -> None:
    """``--relax``: the reference written next to the samples has every PySCF force (computed
    here independently) below FMAX, so all 3 water modes are real and sampled; the samples
    are displaced from the relaxed geometry, not the input; each record names the relaxation."""
    from ase.io import read
    from ase.units import Bohr, Ha
    from pyscf import gto, scf

    from training.datagen.sampling import sampling_record

    stretched = WATER.copy()
    stretched.positions[1] += [0.0, 0.15, -0.05]  # an O–H bond 0.15 Å too long
    src = tmp_path / "water.xyz"
    write(src, stretched)
    out = tmp_path / "s.extxyz"
    argv = ["datagen", "sample", "modes", str(src), "-o", str(out), "-n", "2", "--seed", "4"]
    assert main([*argv, "--xc", "HF", "--basis", "sto-3g", "--relax", "0.005"]) == 0
    ref = read(tmp_path / "s.reference.xyz")
    mol = gto.M(
        atom=[
            (s, tuple(p)) for s, p in zip(ref.get_chemical_symbols(), ref.positions, strict=True)
        ],
        basis="sto-3g",
        unit="Angstrom",
        verbose=0,
    )
    mf = scf.RHF(mol)
    mf.conv_tol = 1e-11
    mf.kernel()
    forces = np.linalg.norm(mf.nuc_grad_method().kernel(), axis=1) * Ha / Bohr
    assert forces.max() < 0.005 * 1.01  # extxyz stores positions to 1e-8 Å
    oh = np.linalg.norm(ref.positions[1] - ref.positions[0])
    assert abs(oh - np.linalg.norm(stretched.positions[1] - stretched.positions[0])) > 0.05
    recs = [sampling_record(f) for f in read(out, index=":")]
    for rec in recs:
        assert rec["n_modes_sampled"] == 3 and rec["n_modes_skipped_not_minimum"] == 0
        relax = rec["reference_relaxation"]
        assert relax["gradient_evaluations"] > 1 and relax["final_max_force_eV_per_A"] < 0.005
        assert "relaxed" in rec["reference"]
    for f in read(out, index=":"):
        assert np.linalg.norm(f.positions - ref.positions, axis=1).max() < 0.5
    assert "relaxed in" in capsys.readouterr().err


def test_sample_modes_relax_needs_positive_fmax(pyscf, tmp_path: Path, capsys) -> None:
    src = tmp_path / "water.xyz"
    write(src, WATER)
    out = tmp_path / "s.extxyz"
    argv = ["datagen", "sample", "modes", str(src), "-o", str(out), "--relax", "0"]
    assert "--relax" in one_line_error(capsys, argv)
    assert not out.exists() and not (tmp_path / "s.reference.xyz").exists()


def test_relax_bfgs_fallback_agrees_with_geometric(pyscf) -> None:
    """Both optimisers reach the same water minimum (HF/STO-3G) within the force criterion."""
    from training.datagen.sampling import pyscf_relax

    stretched = WATER.copy()
    stretched.positions[1] += [0.0, 0.1, 0.0]
    geo, rec_geo = pyscf_relax(stretched, "HF", "sto-3g", fmax=0.002, optimizer="geometric")
    bfgs, rec_bfgs = pyscf_relax(stretched, "HF", "sto-3g", fmax=0.002, optimizer="bfgs")
    assert rec_geo["method"].startswith("geometric") and rec_bfgs["method"].startswith("bfgs")
    for rec in (rec_geo, rec_bfgs):
        assert rec["final_max_force_eV_per_A"] < 0.002
    dist = geo.get_all_distances()
    np.testing.assert_allclose(bfgs.get_all_distances(), dist, atol=2e-3)
    with pytest.raises(ValueError, match="optimizer 'newton'"):
        pyscf_relax(stretched, "HF", "sto-3g", optimizer="newton")
