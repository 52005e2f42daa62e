"""``gears_h bands`` / ``gears_h dos`` end to end, and deepx-dock on our DeepH output.

* The stored DFT blocks of a shipped h-BN snapshot, through the command (``MODEL`` = the
  snapshot folder: the same `band_energies` call as for predictions), reproduce the DFT
  eigenvalues at Γ and at the stored k point (issue 9 acceptance).
* ``--plot`` writes a PNG, ``--json`` prints one object of the documented shape; a molecule
  with ``--path`` and other bad input exit 2 with one line.
* deepx-dock's ``dock compute eigen calc-band`` on an exported DeepH directory gives the
  eigenvalues of ``gears_h bands`` to 1e-6 eV.
* A model (random parameters: its S is not positive definite) gives the documented error,
  the ``--overlap-threshold`` fallback, and ``infer --format deeph`` / ``-o x.TSHS`` output
  that ``gears_h bands`` reads back into the same eigenvalues.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from optional_tools import require_executable, require_module

from gears_h_core.io.deeph import write_deeph_folders
from training.cli import main
from training.data.snapshot import LabeledStructure

HBN = "hbn_pbe_dzp/valid/hbn5x5_100"
BUTANOL = "butanol_pbe_def2svp/valid/butanol_100"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _json(out: str) -> dict[str, Any]:
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out  # exactly one JSON object on stdout
    doc: dict[str, Any] = json.loads(lines[0])
    return doc


def test_bands_of_stored_blocks_reproduce_dft_eigenvalues(
    hbn: LabeledStructure, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = hbn.reference
    assert ref is not None and ref.k_test is not None
    k_test = " ".join(repr(float(x)) for x in ref.k_test)
    code, out, _ = _run(
        ["bands", str(shared_data / HBN), "--kpoints", f"0 0 0; {k_test}", "--json"], capsys
    )
    assert code == 0
    doc = _json(out)
    assert set(doc) == {"kpoints", "eigenvalues_eV"}
    np.testing.assert_array_equal(doc["kpoints"], [[0.0, 0.0, 0.0], ref.k_test])
    eig = np.asarray(doc["eigenvalues_eV"])
    assert eig.shape == (2, 650)
    for row, eps in zip(eig, (ref.eps_gamma, ref.eps_ktest), strict=True):
        assert eps is not None
        np.testing.assert_allclose(row[: len(eps)], eps, rtol=0, atol=1e-4)


def test_band_plot_and_json_along_a_path(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "plots" / "bands.png"
    folder = str(shared_data / HBN)
    argv = ["bands", folder, "--path", "GMKG", "--npoints", "7", "--json", "--plot", str(png)]
    code, out, err = _run([*argv, "--reference", folder], capsys)
    assert code == 0, err
    doc = _json(out)
    k = np.asarray(doc["kpoints"])
    eig = np.asarray(doc["eigenvalues_eV"])
    assert k.shape == (7, 3) and eig.shape == (7, 650)
    np.testing.assert_array_equal(k[0], 0.0)
    assert np.all(np.diff(eig, axis=1) >= 0)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert f"wrote {png}" in err


def test_bad_input_is_one_line_exit_2(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    molecule = str(shared_data / BUTANOL)
    cases = [
        (["bands", molecule, "--path", "GX"], "no periodic axis"),
        (["bands", molecule, "--path", "GX", "--kpoints", "0 0 0"], "either --path or --kpoints"),
        (["bands", molecule, "--kpoints", "0 0"], "is not three numbers"),
        (["bands", molecule, "atoms.xyz"], "give no STRUCTURE"),
        (["bands", str(shared_data / HBN), "--path", "GLQ"], "special point(s) L, Q"),
        (["dos", molecule, "--kmesh", "2", "1", "1"], "axis a is not periodic"),
        (["dos", molecule, "--sigma", "0"], "--sigma must be > 0"),
    ]
    for argv, message in cases:
        code, out, err = _run(argv, capsys)
        assert code == 2, argv
        assert out == ""
        assert err.startswith("gears_h: ") and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_dos_of_a_molecule(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dat, png = tmp_path / "dos.dat", tmp_path / "dos.png"
    argv = ["dos", str(shared_data / BUTANOL), "--sigma", "0.2", "-o", str(dat)]
    code, out, err = _run([*argv, "--plot", str(png), "--json"], capsys)
    assert code == 0, err
    doc = _json(out)
    assert doc["kmesh"] == [1, 1, 1] and doc["sigma_eV"] == 0.2
    e, dos = np.asarray(doc["energies_eV"]), np.asarray(doc["dos_states_per_eV"])
    assert np.trapezoid(dos, e) == pytest.approx(2 * 120, rel=1e-3)  # both spins, 120 orbitals
    table = np.loadtxt(dat)
    np.testing.assert_allclose(table[:, 0], e, rtol=1e-7)
    np.testing.assert_allclose(table[:, 1], dos, rtol=1e-7, atol=1e-12)
    assert "E_F" in dat.read_text().splitlines()[1]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_deepx_dock_calc_band_equals_gears_h_bands(
    hbn: LabeledStructure, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_module("deepx_dock")
    dock = require_executable("dock")
    ref = hbn.reference
    assert ref is not None and ref.e_fermi is not None
    [folder] = write_deeph_folders([hbn.hamiltonian], tmp_path, fermi_energy=ref.e_fermi)
    # deepx-dock's k path file: "n k_start k_end label_start label_end" per segment
    (folder / "K_PATH").write_text("4 0 0 0 0.5 0 0 G M\n3 0.5 0 0 0.137 0.291 0 M T\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(
        [dock, "compute", "eigen", "calc-band", str(folder), "-p", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with h5py.File(folder / "band.h5", "r") as f:
        kpoints = f["kpoints_frac_list"][()]
        # deepx-dock shifts its bands by the Fermi level it settles on; undo it
        theirs = f["band_data"][()].T + f["fermi_energy_before_shift_eV"][()]
    assert kpoints.shape == (7, 3)
    spec = "; ".join(" ".join(repr(float(x)) for x in k) for k in kpoints)
    code, out, err = _run(["bands", str(folder), "--kpoints", spec, "--json"], capsys)
    assert code == 0, err
    ours = np.asarray(_json(out)["eigenvalues_eV"])
    assert ours.shape == theirs.shape == (7, 650)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------
# a model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A random-parameter B/N model (real `Predictor`) and a two-atom h-BN cell file."""
    from ase import Atoms

    from gears_h_core.basis.orbitals import OrbitalBasis
    from gears_h_core.graph.padding import BucketLadder
    from gears_h_core.predict import Predictor
    from gears_h_core.testing import random_bundle, tiny_model_config

    basis = OrbitalBasis({5: (0, 1), 7: (0, 1)})
    ladder = BucketLadder(8, 16, 2.0, edges_per_atom=16, pairs_per_atom=32)
    bundle = random_bundle(basis, tiny_model_config(), ladder, 3.0, name="tiny-random-bn")
    a = 2.5
    cell = [[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, 12.0]]
    atoms = Atoms("BN", [[0, 0, 6.0], [0, a / np.sqrt(3), 6.0]], cell=cell, pbc=[1, 1, 0])
    path = tmp_path_factory.mktemp("tiny") / "bn.extxyz"
    atoms.write(path)
    return Predictor(bundle), path


def test_model_bands_fallback_and_interop_outputs(
    tiny: tuple[Any, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    require_module("sisl")
    predictor, structure = tiny
    import training.export

    # one compiled predictor for every command of this test (MODEL is then only a name)
    monkeypatch.setattr(
        training.export, "load_predictor", lambda spec, tmp, cache_dir=None: predictor
    )
    kpts = "0 0 0; 0.3333333333 0.3333333333 0; 0.5 0 0"
    base = ["bands", "tiny", str(structure), "--kpoints", kpts, "--json"]

    code, out, err = _run(base, capsys)
    assert code == 2 and out == ""
    assert "S(k) at k = (0, 0, 0) is not positive definite" in err
    assert "--overlap-threshold" in err and "Traceback" not in err

    code, out, err = _run([*base, "--overlap-threshold", "0.05"], capsys)
    assert code == 0, err
    eig = np.asarray(_json(out)["eigenvalues_eV"])
    assert eig.shape[0] == 3 and 0 < eig.shape[1] < 8  # 2 atoms × (s + p); some dropped

    out_dir = tmp_path / "deeph"
    code, _, err = _run(
        ["infer", "tiny", str(structure), "-o", str(out_dir), "--format", "deeph"], capsys
    )
    assert code == 0, err
    assert "fermi_energy_eV unknown" in err
    folder = out_dir / "structure_0000"
    code, out, err = _run(
        ["bands", str(folder), "--kpoints", kpts, "--json", "--overlap-threshold", "0.05"],
        capsys,
    )
    assert code == 0, err
    np.testing.assert_allclose(np.asarray(_json(out)["eigenvalues_eV"]), eig, rtol=0, atol=1e-9)

    tshs = tmp_path / "bn.TSHS"
    code, _, err = _run(["infer", "tiny", str(structure), "-o", str(tshs)], capsys)
    assert code == 0, err
    assert tshs.is_file() and f"wrote {tshs}" in err
