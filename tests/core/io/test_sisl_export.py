"""sisl / TBtrans output (`gears_h_core.io.sisl_export`): the file sisl reads back holds our
blocks, and sisl's own H(k) diagonalisation gives our eigenvalues."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from optional_tools import require_module

from gears_h_core.assemble.bands import band_energies
from gears_h_core.io.csr_blocks import block_matrix_from_csr
from gears_h_core.io.sisl_export import sisl_to_csr_per_shift, to_sisl, write_sisl
from gears_h_core.testing import assert_block_matrices_close
from training.data.snapshot import LabeledStructure


@pytest.mark.parametrize("which", ["hbn", "butanol"])
def test_tshs_round_trip_and_sisl_eigenvalues(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    sisl = require_module("sisl")
    labeled: LabeledStructure = request.getfixturevalue(which)
    sh = labeled.hamiltonian
    path = write_sisl(sh, tmp_path / "h.TSHS")
    assert path.is_file() and not list(tmp_path.glob(".*"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = sisl.get_sile(path).read_hamiltonian()
    assert not back.orthogonal
    np.testing.assert_allclose(back.geometry.xyz, sh.structure.positions, rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.geometry.cell, sh.structure.cell, rtol=0, atol=1e-12)
    per = sisl_to_csr_per_shift(back)
    numbers = sh.structure.numbers
    H = block_matrix_from_csr(per["H"], numbers, sh.basis)
    S = block_matrix_from_csr(per["S"], numbers, sh.basis)
    assert sh.S is not None
    # TSHS stores Ry: float32 eV -> float64 Ry -> eV -> float32 gives the same floats
    assert assert_block_matrices_close(sh.H, H, rtol=0.0) == 0.0
    assert assert_block_matrices_close(sh.S, S, rtol=0.0) == 0.0
    ref = labeled.reference
    k = ref.k_test if ref is not None and ref.k_test is not None else np.zeros(3)
    ours = band_energies(sh, [k]).eigenvalues[0]
    np.testing.assert_allclose(back.eigh(k=k), ours, rtol=0, atol=1e-8)


def test_sisl_without_overlap_suffixes_and_supercell(hbn: LabeledStructure, tmp_path: Path) -> None:
    require_module("sisl")
    H = to_sisl(replace(hbn.hamiltonian, S=None))
    assert H.orthogonal  # without S: an orthogonal tight-binding model
    with pytest.raises(ValueError, match=r"\.TSHS or \.nc"):
        write_sisl(hbn.hamiltonian, tmp_path / "h.hsx")
    nsc = to_sisl(hbn.hamiltonian).geometry.lattice.nsc
    shifts = np.concatenate([g.shift for g in hbn.hamiltonian.H.hopping])
    np.testing.assert_array_equal(nsc, 2 * np.abs(shifts).max(axis=0) + 1)
    assert nsc[2] == 1
