"""Our DeepH directories against deepx-dock itself (the DeepH-pack tool kit, test-only).

* Orbital convention: deepx-dock's own Wigner matrices of its real-harmonic basis
  (``analyze/dft_equiv``: used to check the equivariance of DeepH data) equal ours
  (`wigner_gpaw`) for every l — same m order and the same relative signs, so the identity
  `DEEPH_TO_GPAW` is right; its PySCF → DeepH permutation is our PySCF → GPAW table.
* Reader: deepx-dock's ``HamiltonianObj`` reads an exported directory into the H(R), S(R)
  that our blocks give, atom for atom in POSCAR order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from optional_tools import require_module
from scipy.spatial.transform import Rotation

from gears_h_core.assemble.sparse import to_csr_per_shift
from gears_h_core.basis.conventions import PYSCF_TO_GPAW, wigner_gpaw
from gears_h_core.io.deeph import DEEPH_TO_GPAW, poscar_order, write_deeph_folders
from training.data.snapshot import LabeledStructure


def test_deepx_wigner_matrices_are_ours() -> None:
    require_module("deepx_dock")
    from deepx_dock.analyze.dft_equiv import test_equiv as equiv

    rng = np.random.default_rng(7)
    for ell in range(7):
        for _ in range(3):
            alpha, gamma = rng.uniform(0, 2 * np.pi, 2)
            beta = rng.uniform(0, np.pi)
            # deepx-dock rotates structures by Rotation.from_euler("zyz", [γ, β, α])
            # (gen_struct.py) and blocks by wigner_D_mat(α, β, γ) (test_equiv.py)
            R = Rotation.from_euler("zyz", [gamma, beta, alpha]).as_matrix()
            theirs = equiv.wigner_D_mat(alpha, beta, gamma, ell)
            np.testing.assert_allclose(theirs, wigner_gpaw(ell, R), rtol=0, atol=1e-12)
    for ell, (perm, sign) in DEEPH_TO_GPAW.shells.items():
        assert perm == tuple(range(2 * ell + 1)) and set(sign) == {1}


def test_deepx_pyscf_table_is_ours() -> None:
    require_module("deepx_dock")
    require_module("pyscf")
    from deepx_dock.compute.pyscf.pyscf_hooker import BASIS_TRANS_PYSCF2WIKI

    for ell in range(4):
        perm, sign = PYSCF_TO_GPAW.shell(ell)
        assert tuple(BASIS_TRANS_PYSCF2WIKI(ell).tolist()) == perm
        assert set(sign) == {1}  # deepx-dock applies no signs either


def test_deepx_reader_gets_our_real_space_matrices(hbn: LabeledStructure, tmp_path: Path) -> None:
    require_module("deepx_dock")
    from deepx_dock.compute.eigen.hamiltonian import HamiltonianObj

    sh = hbn.hamiltonian
    [folder] = write_deeph_folders([sh], tmp_path, fermi_energy=-5.0)
    obj = HamiltonianObj(folder)
    assert obj.fermi_energy == -5.0 and obj.orbits_quantity == 650
    numbers = sh.structure.numbers
    order = poscar_order(numbers)
    offsets = sh.basis.orbital_offsets(numbers)
    # orbital k of deepx-dock (POSCAR atom order) is our orbital orb[k]
    orb = np.concatenate([np.arange(offsets[a], offsets[a + 1]) for a in order])
    np.testing.assert_allclose(
        obj.frac_coords @ obj.lattice, sh.structure.positions[order], rtol=0, atol=1e-12
    )
    assert sh.S is not None
    for name, mats, bm in (("H", obj.HR, sh.H), ("S", obj.SR, sh.S)):
        ours = to_csr_per_shift(bm, sh.basis, numbers, dtype=np.float64)
        theirs = {tuple(int(x) for x in R): m for R, m in zip(obj.Rijk_list, mats, strict=True)}
        assert set(theirs) == set(ours), name
        for R, m in ours.items():
            np.testing.assert_array_equal(theirs[R], m.toarray()[np.ix_(orb, orb)], err_msg=name)
