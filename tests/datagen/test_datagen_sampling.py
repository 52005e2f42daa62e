"""Seeded structure sampling (training.datagen.sampling) and the datagen CLI surface that
needs no DFT code: reproducible draws with complete records, strain/ripple/rattle bounds,
thermal normal modes on a harmonic model (no rigid motion, classical variance kT/k),
``datagen --help`` naming the install steps, one-line errors for bad settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import read, write

from training.cli import main
from training.datagen.sampling import (
    INFO_KEY,
    distort_periodic,
    hbn_supercell,
    sampling_record,
    thermal_normal_modes,
    write_samples,
)


def test_distort_periodic_reproducible_and_bounded() -> None:
    ideal = hbn_supercell(3)
    a, rec_a = distort_periodic(ideal, 11, strain=0.02, ripple=0.25, rattle=(0.02, 0.1))
    b, rec_b = distort_periodic(ideal, 11, strain=0.02, ripple=0.25, rattle=(0.02, 0.1))
    c, _ = distort_periodic(ideal, 12)
    assert np.array_equal(a.positions, b.positions) and rec_a == rec_b
    assert not np.allclose(a.positions, c.positions)
    assert rec_a["seed"] == 11 and len(rec_a["ripple_waves"]) == 3
    eps = np.array(rec_a["strain_tensor"])
    assert eps.shape == (2, 2) and np.allclose(eps, eps.T) and np.abs(eps).max() <= 0.02
    assert 0.0 <= rec_a["ripple_amplitude"] <= 0.25 and 0.02 <= rec_a["rattle_sigma"] <= 0.1
    assert a.cell[2, 2] == pytest.approx(ideal.cell[2, 2])  # vacuum axis untouched
    assert np.allclose(a.cell.array[:2, 2], 0.0)
    json.dumps(rec_a)  # recordable


def test_ripple_follows_record() -> None:
    ideal = hbn_supercell(4)
    no_rattle, rec = distort_periodic(ideal, 3, strain=0.0, ripple=0.2, rattle=(0.0, 0.0))
    s = ideal.get_scaled_positions()[:, :2]
    dz = sum(
        rec["ripple_scale"] * w * np.cos(2 * np.pi * (h * s[:, 0] + k * s[:, 1]) + ph)
        for h, k, w, ph in rec["ripple_waves"]
    )
    np.testing.assert_allclose(no_rattle.positions[:, 2] - ideal.positions[:, 2], dz, atol=1e-12)
    assert np.abs(dz).max() <= rec["ripple_amplitude"] + 1e-12


def _diatomic_hessian(k_spring: float) -> np.ndarray:
    """Bond along z: E = ½ k (z1 − z0)²; eV/Å²."""
    h = np.zeros((6, 6))
    h[2, 2] = h[5, 5] = k_spring
    h[2, 5] = h[5, 2] = -k_spring
    return h


def test_normal_modes_classical_variance_and_no_rigid_motion() -> None:
    from ase.units import kB

    mol = Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.13]])
    k_spring = 100.0
    hess = _diatomic_hessian(k_spring)
    stretch = []
    for seed in range(400):
        out, rec = thermal_normal_modes(mol, hess, seed, temperature=(500.0, 500.0), quantum=False)
        d = out.positions - mol.positions
        com = (out.get_masses()[:, None] * d).sum(0)
        assert np.abs(com).max() < 1e-12  # translations projected out
        assert np.abs(d[:, :2]).max() < 1e-12  # no rotation about x or y
        stretch.append(d[1, 2] - d[0, 2])
    assert rec["n_modes_sampled"] == 1 and rec["temperature_K"] == 500.0
    var = np.var(stretch)
    assert var == pytest.approx(kB * 500.0 / k_spring, rel=0.2)
    a, ra = thermal_normal_modes(mol, hess, 7)
    b, rb = thermal_normal_modes(mol, hess, 7)
    assert np.array_equal(a.positions, b.positions) and ra == rb
    assert 300.0 <= ra["temperature_K"] <= 700.0


def test_samples_round_trip_through_extxyz(tmp_path: Path) -> None:
    ideal = hbn_supercell(2)
    samples = [distort_periodic(ideal, s) for s in (1, 2)]
    path = write_samples(tmp_path / "s.extxyz", samples)
    frames = read(path, index=":")
    assert len(frames) == 2
    assert sampling_record(frames[1]) == json.loads(json.dumps(samples[1][1]))
    assert isinstance(frames[0].info[INFO_KEY], str)
    np.testing.assert_allclose(frames[1].positions, samples[1][0].positions, atol=1e-7)


def test_sample_periodic_cli(tmp_path: Path) -> None:
    src = tmp_path / "hbn.extxyz"
    write(src, hbn_supercell(2))
    out = tmp_path / "samples.extxyz"
    argv = ["datagen", "sample", "periodic", str(src), "-o", str(out), "-n", "3", "--seed", "40"]
    assert main(argv) == 0
    frames = read(out, index=":")
    assert [sampling_record(f)["seed"] for f in frames] == [40, 41, 42]


def test_datagen_help_names_install_steps(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["datagen", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for needle in (
        "uv sync --frozen --extra dft",
        "scripts/install_gpaw.sh",
        "libxc-dev libopenblas-dev",
        "CC=g++ uv pip install gpaw==26.7.0 gpaw-data==1.2.1",
    ):
        assert needle in text


def test_bad_config_is_one_line(tmp_path: Path, capsys) -> None:
    src = tmp_path / "h2.xyz"
    write(src, Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("basiz: sto-3g\n")
    assert (
        main(["datagen", "pyscf", str(src), "-o", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cfg) in err[0] and "basiz" in err[0]
    assert not (tmp_path / "o").exists()


def test_missing_structure_file(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.xyz"
    assert main(["datagen", "gpaw", str(missing), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "no such file" in err[0]
