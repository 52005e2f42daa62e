"""`training.evaluate`: errors of predicted blocks against a data set's stored blocks.

Predictions are DFT blocks with known, hand-made errors, so every expected number is exact:
a perfect prediction gives 0 whatever its row order, a constant offset on one species pair
shows up in that pair only, missing rows count as zero blocks, extra rows are ignored, and
H + c·S shifts every eigenvalue by exactly c.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gears_h_core.types import BlockMatrix, HoppingGroup, OnsiteGroup, SparseHamiltonian
from training.data.snapshot import LabeledStructure, read_snapshot
from training.evaluate import EIGEN_WINDOW_EV, eigenvalue_errors, evaluate_predictions

H_KEYS = {"mae_meV", "rmse_meV", "max_meV", "onsite_mae_meV", "hopping_mae_meV"}


@pytest.fixture(scope="module")
def butanol(shared_data: Path) -> LabeledStructure:
    return read_snapshot(shared_data / "butanol_pbe_def2svp" / "train" / "butanol_000")


def _with_h(sh: SparseHamiltonian, H: BlockMatrix) -> SparseHamiltonian:
    return replace(sh, H=H)


def _n_elements(groups) -> int:
    return sum(int(g.blocks.size) for g in groups)


def _pair_key(g: HoppingGroup) -> str:
    a, b = sorted((g.z_i, g.z_j))
    return f"{a}-{b} hopping"


def test_perfect_prediction_has_zero_error_and_lists_every_pair(
    butanol: LabeledStructure,
) -> None:
    result = evaluate_predictions([(butanol.hamiltonian, butanol)])
    assert result["n_structures"] == 1
    assert set(result["H"]) == H_KEYS
    assert all(v == 0.0 for v in result["H"].values())
    assert result["S"] == {"mae": 0.0, "max": 0.0}
    H = butanol.hamiltonian.H
    expected_pairs = {f"{g.z}-{g.z} onsite" for g in H.onsite} | {_pair_key(g) for g in H.hopping}
    assert set(result["per_species_pair"]) == expected_pairs
    for v in result["per_species_pair"].values():
        assert v == {"H_mae_meV": 0.0, "S_mae": 0.0}


def test_rows_are_matched_by_atoms_and_shift_not_by_position(hbn: LabeledStructure) -> None:
    """The same blocks, rows listed in another order (periodic: rows differ only by shift)."""
    rng = np.random.default_rng(0)
    H = hbn.hamiltonian.H

    def shuffled_onsite(g: OnsiteGroup) -> OnsiteGroup:
        p = rng.permutation(len(g.atoms))
        return replace(g, atoms=g.atoms[p], blocks=g.blocks[p])

    def shuffled_hopping(g: HoppingGroup) -> HoppingGroup:
        p = rng.permutation(len(g.i))
        return replace(g, i=g.i[p], j=g.j[p], shift=g.shift[p], blocks=g.blocks[p])

    shuffled = BlockMatrix(
        onsite=tuple(shuffled_onsite(g) for g in H.onsite),
        hopping=tuple(shuffled_hopping(g) for g in reversed(H.hopping)),
    )
    pred = replace(hbn.hamiltonian, H=shuffled, S=None)
    result = evaluate_predictions([(pred, hbn)])
    assert result["H"]["max_meV"] == 0.0
    assert result["S"] is None  # no predicted S: no S errors
    assert all("S_mae" not in v for v in result["per_species_pair"].values())
    # the shift matters: the same (i, j) with the blocks of another image is an error
    g = H.hopping[0]
    swapped = replace(g, shift=-g.shift)  # (i, j, -n) holds another block than (i, j, n)
    pred = _with_h(hbn.hamiltonian, replace(H, hopping=(swapped, *H.hopping[1:])))
    assert evaluate_predictions([(pred, hbn)])["H"]["max_meV"] > 1.0


def test_constant_offset_on_one_species_pair(butanol: LabeledStructure) -> None:
    delta = 0.1  # eV
    H = butanol.hamiltonian.H
    target = "1-6 hopping"
    hopping = tuple(
        replace(g, blocks=(g.blocks + np.float32(delta)).astype(np.float32))
        if _pair_key(g) == target
        else g
        for g in H.hopping
    )
    pred = _with_h(butanol.hamiltonian, replace(H, hopping=hopping))
    result = evaluate_predictions([(pred, butanol)])
    n_on, n_hop = _n_elements(H.onsite), _n_elements(H.hopping)
    n_target = _n_elements(g for g in H.hopping if _pair_key(g) == target)
    assert 0 < n_target < n_hop
    h = result["H"]
    rel = 1e-4  # float32 rounding of block + delta
    assert h["onsite_mae_meV"] == 0.0
    assert h["max_meV"] == pytest.approx(1000 * delta, rel=rel)
    assert h["hopping_mae_meV"] == pytest.approx(1000 * delta * n_target / n_hop, rel=rel)
    assert h["mae_meV"] == pytest.approx(1000 * delta * n_target / (n_on + n_hop), rel=rel)
    assert h["rmse_meV"] == pytest.approx(
        1000 * delta * np.sqrt(n_target / (n_on + n_hop)), rel=rel
    )
    for key, v in result["per_species_pair"].items():
        expected = 1000 * delta if key == target else 0.0
        assert v["H_mae_meV"] == pytest.approx(expected, rel=rel, abs=0), key
        assert v["S_mae"] == 0.0


def test_missing_rows_count_as_zero_and_extra_rows_are_ignored(
    butanol: LabeledStructure,
) -> None:
    H = butanol.hamiltonian.H
    dropped_key = "6-8 hopping"
    kept = tuple(g for g in H.hopping if _pair_key(g) != dropped_key)
    dropped = [g for g in H.hopping if _pair_key(g) == dropped_key]
    assert dropped
    # half of the rows of another group missing as well
    g0 = kept[0]
    half = len(g0.i) // 2
    cut = replace(g0, i=g0.i[:half], j=g0.j[:half], shift=g0.shift[:half], blocks=g0.blocks[:half])
    pred = _with_h(butanol.hamiltonian, replace(H, hopping=(cut, *kept[1:])))
    result = evaluate_predictions([(pred, butanol)])
    missing_abs = sum(float(np.abs(g.blocks.astype(np.float64)).sum()) for g in dropped)
    missing_abs += float(np.abs(g0.blocks[half:].astype(np.float64)).sum())
    n_total = _n_elements(H.onsite) + _n_elements(H.hopping)
    assert result["H"]["mae_meV"] == pytest.approx(1000 * missing_abs / n_total, rel=1e-9)
    dropped_mae = sum(float(np.abs(g.blocks.astype(np.float64)).sum()) for g in dropped) / sum(
        g.blocks.size for g in dropped
    )
    pair = result["per_species_pair"][dropped_key]
    assert pair["H_mae_meV"] == pytest.approx(1000 * dropped_mae, rel=1e-9)
    # the other way round: the data set lacks rows the model predicts -> they are not scored
    ref_partial = replace(
        butanol,
        hamiltonian=replace(butanol.hamiltonian, H=replace(H, hopping=kept), S=None),
    )
    result = evaluate_predictions([(butanol.hamiltonian, ref_partial)])
    assert result["H"]["max_meV"] == 0.0
    assert dropped_key not in result["per_species_pair"]


def test_errors_accumulate_over_structures(
    butanol: LabeledStructure, hbn: LabeledStructure
) -> None:
    """Element-weighted over all structures (not a mean of per-structure MAEs)."""
    delta = 0.05
    H = butanol.hamiltonian.H
    onsite = tuple(replace(g, blocks=g.blocks + np.float32(delta)) for g in H.onsite)
    pred = _with_h(butanol.hamiltonian, replace(H, onsite=onsite))
    result = evaluate_predictions([(pred, butanol), (hbn.hamiltonian, hbn)])
    n_b = _n_elements(H.onsite) + _n_elements(H.hopping)
    n_h = _n_elements(hbn.hamiltonian.H.onsite) + _n_elements(hbn.hamiltonian.H.hopping)
    n_on = _n_elements(H.onsite) + _n_elements(hbn.hamiltonian.H.onsite)
    assert result["n_structures"] == 2
    assert result["H"]["mae_meV"] == pytest.approx(
        1000 * delta * _n_elements(H.onsite) / (n_b + n_h), rel=1e-4
    )
    assert result["H"]["onsite_mae_meV"] == pytest.approx(
        1000 * delta * _n_elements(H.onsite) / n_on, rel=1e-4
    )
    assert result["H"]["hopping_mae_meV"] == 0.0


def test_h_plus_c_s_shifts_every_eigenvalue_by_c(hbn: LabeledStructure) -> None:
    """H' = H + c·S has eigenvalues ε + c at every k: the error is c for every compared state.
    The prediction carries no S, so the data set's S is used."""
    c = 0.0123  # eV
    sh = hbn.hamiltonian
    assert sh.S is not None and hbn.reference is not None
    s_on = {g.z: g for g in sh.S.onsite}
    s_hop = {(g.z_i, g.z_j): g for g in sh.S.hopping}
    onsite = tuple(
        replace(g, blocks=(g.blocks.astype(np.float64) + c * s_on[g.z].blocks).astype(np.float32))
        for g in sh.H.onsite
    )
    hopping = []
    for g in sh.H.hopping:
        sg = s_hop[(g.z_i, g.z_j)]
        assert np.array_equal(sg.i, g.i) and np.array_equal(sg.shift, g.shift)
        blocks = g.blocks.astype(np.float64) + c * sg.blocks
        hopping.append(replace(g, blocks=blocks.astype(np.float32)))
    pred = replace(sh, H=BlockMatrix(onsite=onsite, hopping=tuple(hopping)), S=None)

    errors = eigenvalue_errors(pred, hbn)
    ref = hbn.reference
    in_window = lambda eps: int(np.sum(np.abs(eps - ref.e_fermi) <= EIGEN_WINDOW_EV))  # noqa: E731
    # states within ±2 eV of E_F, at Γ and at the off-mesh k point
    assert errors.size == in_window(ref.eps_gamma) + in_window(ref.eps_ktest) > 0
    np.testing.assert_allclose(errors, c, atol=2e-5)  # float32 blocks: ~1e-6 eV
    result = evaluate_predictions([(pred, hbn)])
    eig = result["eigenvalues"]
    assert eig["n_states"] == errors.size
    assert eig["mae_meV_within_2eV_of_ef"] == pytest.approx(1000 * c, abs=0.02)
    assert eig["max_meV_within_2eV_of_ef"] == pytest.approx(1000 * c, abs=0.02)
    assert eig["failed"] == []

    # in the shared subspace of the reference S(k) the shift is exactly c too, the same
    # states are compared, and the projection's own effect on the DFT levels is reported
    projection: list[np.ndarray] = []
    sub = eigenvalue_errors(pred, hbn, 1e-3, projection)
    assert sub.size == errors.size
    np.testing.assert_allclose(sub, c, atol=2e-5)
    moved = np.concatenate(projection)
    assert moved.size == errors.size and 0 < moved.mean() < 0.05  # eV: dzp h-BN, 1e-3
    result = evaluate_predictions([(pred, hbn)], overlap_threshold=1e-3)
    assert result["eigenvalues"]["overlap_threshold"] == 1e-3
    assert result["eigenvalues"]["projection_mae_meV"] == pytest.approx(1000 * moved.mean())


def test_shared_subspace_removes_a_spurious_level(hbn: LabeledStructure) -> None:
    """An H error along a near-null direction of S (dzp h-BN: λ_min(S) ≈ 1e-4) makes a
    spurious level far from the physical ones and misaligns the full-basis comparison;
    in the shared subspace (threshold above that λ) the same error leaves the levels."""
    from gears_h_core.assemble.bands import hamiltonian_at_k, shared_subspace_eigvalsh

    sh = hbn.hamiltonian
    k = np.zeros(3)
    _, Sk = hamiltonian_at_k(sh, k)
    s, U = np.linalg.eigh(Sk.toarray().real)  # Γ: real
    assert s[0] < 1e-3
    # δ = 0.05 eV · v_a v_aᵀ in every on-site block, v the softest eigenvector of S
    offsets = sh.basis.orbital_offsets(sh.structure.numbers)
    v = U[:, 0]
    onsite = []
    for g in sh.H.onsite:
        blocks = g.blocks.astype(np.float64).copy()
        for row, atom in enumerate(g.atoms):
            part = v[offsets[atom] : offsets[atom + 1]]
            blocks[row] += 0.05 * np.outer(part, part)
        onsite.append(replace(g, blocks=blocks.astype(np.float32)))
    pred = replace(sh, H=BlockMatrix(onsite=tuple(onsite), hopping=sh.H.hopping))
    full_pred = np.linalg.eigvalsh(
        np.linalg.solve(np.linalg.cholesky(Sk.toarray()), np.eye(len(s)))
    )
    del full_pred
    from gears_h_core.assemble.eigen import generalized_eigvalsh

    Hp, _ = hamiltonian_at_k(pred, k)
    Hr, _ = hamiltonian_at_k(sh, k)
    full_p = generalized_eigvalsh(Hp, Sk, max_size=len(s))
    full_r = generalized_eigvalsh(Hr, Sk, max_size=len(s))
    assert np.abs(full_p - full_r).max() > 1.0  # eV: a level moved by δ / λ_min
    mine, theirs, dropped = shared_subspace_eigvalsh(pred, sh, k, 1e-3)
    assert dropped == int(np.sum(s <= 1e-3)) > 0 and len(mine) == len(theirs) == len(s) - dropped
    # δ is on-site only, so not purely along v: what is left in the kept subspace moves the
    # levels a little (< 0.15 eV), against ~8 eV in the full basis
    assert np.abs(mine - theirs).max() < min(0.15, np.abs(full_p - full_r).max() / 40)


def test_no_eigenvalues_for_gamma_only_or_unlabelled(hbn: LabeledStructure) -> None:
    assert eigenvalue_errors(hbn.hamiltonian, replace(hbn, gamma_only=True)).size == 0
    assert eigenvalue_errors(hbn.hamiltonian, replace(hbn, reference=None)).size == 0
    result = evaluate_predictions([(hbn.hamiltonian, replace(hbn, reference=None))])
    assert result["eigenvalues"] is None


def _negated_s(sh: SparseHamiltonian) -> SparseHamiltonian:
    assert sh.S is not None
    S = BlockMatrix(
        onsite=tuple(replace(g, blocks=-g.blocks) for g in sh.S.onsite),
        hopping=tuple(replace(g, blocks=-g.blocks) for g in sh.S.hopping),
    )
    return replace(sh, S=S)


def test_failed_eigenvalue_problems_are_reported(hbn: LabeledStructure) -> None:
    """A predicted S that is not positive definite (an untrained model) is listed by name."""
    result = evaluate_predictions([(_negated_s(hbn.hamiltonian), replace(hbn, name="bad"))])
    assert result["eigenvalues"] is not None
    assert result["eigenvalues"]["failed"] == ["bad"]
