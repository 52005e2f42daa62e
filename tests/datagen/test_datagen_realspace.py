"""Mesh Bloch matrices -> real-space blocks (training.datagen.realspace), on a synthetic
tight-binding model with known H(T), S(T): the transform must give back every block at the
right lattice shift (which the eigenvalues alone cannot tell: H(T) ↔ H(−T) leaves them
unchanged), keep partners exact, and the alias check must catch a mesh that is too small."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from training.datagen.checks import dense_bloch
from training.datagen.realspace import (
    alias_check,
    alias_free_mesh,
    mesh_kpoints,
    realspace_rows,
)

RANGE = 3.2  # Å: blocks are non-zero only for |D| < RANGE


def _model(seed: int = 0):
    """A skewed 2-D cell (pbc T T F) with 3 atoms of 1, 3 and 4 orbitals, and random blocks
    H_ij(n), S_ij(n) decaying with |D| and cut at RANGE, with H_ji(−n) = H_ij(n)ᵀ."""
    rng = np.random.default_rng(seed)
    cell = np.array([[2.6, 0.0, 0.0], [-0.9, 2.4, 0.0], [0.0, 0.0, 12.0]])
    frac = np.array([[0.05, 0.1, 0.5], [0.45, 0.6, 0.52], [0.8, 0.25, 0.47]])
    pos = frac @ cell
    pbc = np.array([True, True, False])
    sizes = [1, 3, 4]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    rows: dict[tuple[int, int, int, int, int], tuple[np.ndarray, np.ndarray]] = {}
    onsite_h, onsite_s = [], []
    for n in sizes:
        x = rng.normal(size=(n, n))
        onsite_h.append(x + x.T - 3.0 * np.eye(n))
        onsite_s.append(np.eye(n))
    for i, j in itertools.product(range(3), repeat=2):
        for n0, n1 in itertools.product(range(-3, 4), repeat=2):
            shift = (n0, n1, 0)
            if i == j and shift == (0, 0, 0):
                continue
            D = pos[j] + np.array(shift) @ cell - pos[i]
            dist = np.linalg.norm(D)
            if dist >= RANGE or (j, i, -n0, -n1, 0) in rows:
                continue
            decay = np.exp(-dist) * (RANGE - dist)
            bh = rng.normal(size=(sizes[i], sizes[j])) * decay
            bs = rng.normal(size=(sizes[i], sizes[j])) * 0.02 * decay
            rows[(i, j, *shift)] = (bh, bs)
            rows[(j, i, -n0, -n1, 0)] = (bh.T.copy(), bs.T.copy())
    keys = sorted(rows)
    i = np.array([k[0] for k in keys])
    j = np.array([k[1] for k in keys])
    shift = np.array([k[2:] for k in keys])
    return {
        "cell": cell,
        "pos": pos,
        "pbc": pbc,
        "offsets": offsets,
        "onsite_h": onsite_h,
        "onsite_s": onsite_s,
        "i": i,
        "j": j,
        "shift": shift,
        "hop_h": [rows[k][0] for k in keys],
        "hop_s": [rows[k][1] for k in keys],
    }


def _bloch(m: dict, what: str, k: np.ndarray) -> np.ndarray:
    return dense_bloch(
        m["offsets"], m[f"onsite_{what}"], m["i"], m["j"], m["shift"], m[f"hop_{what}"], k
    )


def _transform(m: dict, mesh: tuple[int, ...], threshold: float = 0.0):
    kpts = mesh_kpoints(mesh)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(kpts))  # any order of the mesh points
    Hk = np.stack([_bloch(m, "h", k) for k in kpts[order]])
    Sk = np.stack([_bloch(m, "s", k) for k in kpts[order]])
    return realspace_rows(
        Hk, Sk, mesh, kpts[order], m["pos"], m["cell"], m["pbc"], m["offsets"], threshold, threshold
    )


def test_mesh_kpoints_gamma_centred() -> None:
    k = mesh_kpoints((3, 4, 1))
    assert k.shape == (12, 3)
    assert np.allclose(k[0], 0.0)
    assert np.all((k >= -0.5) & (k < 0.5))
    assert np.allclose(k[:, 2], 0.0)


def test_blocks_recovered_at_their_shifts() -> None:
    m = _model()
    mesh = alias_free_mesh(m["cell"], m["pbc"], RANGE)
    assert mesh[2] == 1 and min(mesh[:2]) >= 3
    rows = _transform(m, mesh)
    want = {
        (int(a), int(b), *map(int, n)): (h, s)
        for a, b, n, h, s in zip(m["i"], m["j"], m["shift"], m["hop_h"], m["hop_s"], strict=True)
    }
    got = {
        (int(a), int(b), *map(int, n)): (h, s)
        for a, b, n, h, s in zip(rows.i, rows.j, rows.shift, rows.hop_h, rows.hop_s, strict=True)
    }
    # threshold 0 keeps numerically-zero classes too; every true row is found at its shift
    missing = set(want) - set(got)
    assert not missing, sorted(missing)[:5]
    for key, (h, s) in want.items():
        np.testing.assert_allclose(got[key][0], h, atol=1e-12)
        np.testing.assert_allclose(got[key][1], s, atol=1e-12)
    for key in set(got) - set(want):  # the rest are zero
        assert np.abs(got[key][0]).max() < 1e-12
    for a in range(3):
        np.testing.assert_allclose(rows.onsite_h[a], m["onsite_h"][a], atol=1e-12)
    # partners exact, bit for bit
    for key, (h, s) in got.items():
        a, b, n0, n1, n2 = key
        ph, ps = got[(b, a, -n0, -n1, -n2)]
        assert np.array_equal(h, ph.T) and np.array_equal(s, ps.T)
    assert rows.half_mesh_self_rows == 0
    assert rows.max_imag < 1e-12
    check = alias_check(
        m["pos"], m["cell"], m["pbc"], mesh, rows.i, rows.j, rows.shift, np.full(3, RANGE / 2), 0.0
    )
    assert check["ok"] and check["rows_aliased"] == 0 and check["min_margin_A"] > 0


def test_threshold_and_off_mesh_k() -> None:
    m = _model()
    mesh = alias_free_mesh(m["cell"], m["pbc"], RANGE)
    rows = _transform(m, mesh, threshold=1e-9)
    n_true = len(m["i"])
    assert len(rows.i) == n_true  # the zero classes are dropped, the true rows kept
    k = np.array([0.137, 0.291, 0.0])  # not on the mesh: needs every block at its true T
    h = dense_bloch(m["offsets"], rows.onsite_h, rows.i, rows.j, rows.shift, rows.hop_h, k)
    np.testing.assert_allclose(h, _bloch(m, "h", k), atol=1e-11)


def test_too_small_mesh_is_flagged() -> None:
    m = _model()
    mesh = (2, 2, 1)
    rows = _transform(m, mesh, threshold=1e-9)
    check = alias_check(
        m["pos"], m["cell"], m["pbc"], mesh, rows.i, rows.j, rows.shift, np.full(3, RANGE / 2), 0.0
    )
    # on a 2×2 mesh every class is its own negative: self images ±a collide (unassignable)
    assert rows.half_mesh_self_rows > 0 or not check["ok"]
    k = np.array([0.137, 0.291, 0.0])
    h = dense_bloch(m["offsets"], rows.onsite_h, rows.i, rows.j, rows.shift, rows.hop_h, k)
    assert np.abs(h - _bloch(m, "h", k)).max() > 1e-3  # aliasing really breaks off-mesh k


def test_alias_check_on_a_chain() -> None:
    """1-D chain, a = 3 Å, atoms 2 Å apart: on a 2-mesh the row at D = 2 Å has its alias at
    D − 2a = −4 Å. Range 3.8 Å: alias-free; range 4.3 Å: both rows aliased, and the
    smallest alias-free mesh for 4.3 Å is 3."""
    cell = np.diag([3.0, 10.0, 10.0])
    pos = np.array([[0.0, 5.0, 5.0], [2.0, 5.0, 5.0]])
    pbc = np.array([True, False, False])
    i, j, shift = np.array([0, 1]), np.array([1, 0]), np.zeros((2, 3), int)
    reach = np.array([1.9, 1.9])
    ok = alias_check(pos, cell, pbc, (2, 1, 1), i, j, shift, reach, 0.0)
    assert ok["ok"] and ok["min_margin_A"] == pytest.approx(0.2)
    bad = alias_check(pos, cell, pbc, (2, 1, 1), i, j, shift, reach, 0.5)
    assert not bad["ok"] and bad["rows_aliased"] == 2
    assert alias_free_mesh(cell, pbc, 4.3) == (3, 1, 1)
    assert alias_check(pos, cell, pbc, (3, 1, 1), i, j, shift, reach, 0.5)["ok"]


@pytest.mark.parametrize("bad", ["missing", "off_mesh"])
def test_rejects_incomplete_mesh(bad: str) -> None:
    m = _model()
    mesh = (3, 3, 1)
    kpts = mesh_kpoints(mesh)
    if bad == "missing":
        kpts = kpts[:-1]
    else:
        kpts = kpts + np.array([0.01, 0.0, 0.0])
    Hk = np.stack([_bloch(m, "h", k) for k in kpts])
    with pytest.raises(ValueError, match="mesh"):
        realspace_rows(Hk, Hk, mesh, kpts, m["pos"], m["cell"], m["pbc"], m["offsets"], 0.0, 0.0)
