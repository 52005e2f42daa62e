"""CSR per lattice shift back into blocks (`gears_h_core.io.csr_blocks`): ``gears_h infer -o
x.npz`` output read back gives the blocks it was written from, bit for bit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from gears_h_core.assemble.sparse import to_csr_per_shift
from gears_h_core.io.csr_blocks import block_matrix_from_csr, read_csr_npz_hamiltonian
from gears_h_core.io.exporters import write_csr_npz
from gears_h_core.testing import assert_block_matrices_close
from training.data.snapshot import LabeledStructure, read_snapshot


@pytest.mark.parametrize(
    "folder", ["hbn_pbe_dzp/valid/hbn5x5_100", "butanol_pbe_def2svp/valid/butanol_100"]
)
@pytest.mark.parametrize("with_s", [True, False])
def test_csr_npz_round_trip_gives_the_blocks(
    shared_data: Path, tmp_path: Path, folder: str, with_s: bool
) -> None:
    labeled: LabeledStructure = read_snapshot(shared_data / folder)
    sh = labeled.hamiltonian if with_s else replace(labeled.hamiltonian, S=None)
    [path] = write_csr_npz([sh], tmp_path / "h.npz")
    back = read_csr_npz_hamiltonian(path, sh.basis)
    np.testing.assert_array_equal(back.structure.numbers, sh.structure.numbers)
    np.testing.assert_array_equal(back.structure.positions, sh.structure.positions)
    np.testing.assert_array_equal(back.structure.pbc, sh.structure.pbc)
    assert assert_block_matrices_close(sh.H, back.H, rtol=0.0) == 0.0
    assert (back.S is None) == (sh.S is None)
    if sh.S is not None and back.S is not None:
        assert assert_block_matrices_close(sh.S, back.S, rtol=0.0) == 0.0


def test_explicit_zeros_keep_their_block_and_bad_input_is_refused(shared_data: Path) -> None:
    sh = read_snapshot(shared_data / "butanol_pbe_def2svp" / "valid" / "butanol_100").hamiltonian
    numbers = sh.structure.numbers
    mats = to_csr_per_shift(sh.H, sh.basis, numbers, dtype=np.float32)
    zeroed = {n: m.copy() for n, m in mats.items()}
    zeroed[(0, 0, 0)].data[:] = 0.0  # stored, but zero: every block stays a row
    bm = block_matrix_from_csr(zeroed, numbers, sh.basis)
    assert bm.n_pairs == sh.H.n_pairs
    assert all(not np.any(g.blocks) for g in bm.hopping)
    n = int(sh.basis.orbital_offsets(numbers)[-1])
    with pytest.raises(ValueError, match="atom 0: no on-site block"):
        block_matrix_from_csr({(0, 0, 0): sp.csr_array((n, n))}, numbers, sh.basis)
    with pytest.raises(ValueError, match="expected"):
        block_matrix_from_csr({(0, 0, 0): sp.csr_array((n + 1, n + 1))}, numbers, sh.basis)
