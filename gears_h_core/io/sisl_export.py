"""H and S as a `sisl.Hamiltonian` (optional: needs ``sisl``), for TBtrans and sisl's tools.

`to_sisl` builds a non-orthogonal, spin-unpolarised `sisl.Hamiltonian` whose supercell holds
every lattice shift of the blocks (``nsc = 2·max|n| + 1`` per axis, 1 along non-periodic
axes); its element (μ, ν + N·isc) is ``H_ij(n)`` of the row with ``lattice.sc_index(n) =
isc``, so sisl's H(k) has the eigenvalues of ours. `write_sisl` writes it as a SIESTA
``.TSHS`` (what TBtrans reads; sisl stores Ry and Bohr and converts back on reading) or a
``.nc`` file (needs the netCDF4 package). `sisl_to_csr_per_shift` reads any of them back into
per-shift matrices for `gears_h_core.io.csr_blocks.block_matrix_from_csr`.

Orbitals are plain `sisl.Orbital` objects tagged with their shell and component in our
order (``"p_y"``, ...; GPAW's real harmonics, SPEC §2 — not SIESTA's, whose odd-m
components differ in sign): transport and DOS do not depend on it, orbital projections do.
Their radius R is half the longest bond the blocks couple from that element (a TSHS file
does not keep element names or radii; sisl reads atoms back as generic species).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from gears_h_core.assemble.blocks import block_matrix_rows
from gears_h_core.assemble.sparse import to_csr_per_shift
from gears_h_core.types import SparseHamiltonian

__all__ = ["SISL_SUFFIXES", "sisl_to_csr_per_shift", "to_sisl", "write_sisl"]

SISL_SUFFIXES = (".tshs", ".nc")

_COMPONENTS = {
    0: ("s",),
    1: ("p_y", "p_z", "p_x"),
    2: ("d_xy", "d_yz", "d_z2", "d_xz", "d_x2-y2"),
    3: ("f_-3", "f_-2", "f_-1", "f_0", "f_1", "f_2", "f_3"),
}


def _import_sisl() -> Any:
    try:
        import sisl
    except ImportError as exc:
        raise ValueError(
            "sisl output needs the sisl package (pip install 'gears-h[sisl]')"
        ) from exc
    return sisl


def _radii(sh: SparseHamiltonian) -> dict[int, float]:
    """Per element: half the longest |D| of the rows starting at that element (≥ 1 Å)."""
    st = sh.structure
    i, j, shift, _ = block_matrix_rows(sh.H)
    d = np.linalg.norm(
        st.positions[j] + shift.astype(np.float64) @ st.cell - st.positions[i], axis=1
    )
    out = {}
    for z in st.species:
        sel = st.numbers[i] == z
        out[z] = max(1.0, 0.5 * float(d[sel].max())) if sel.any() else 1.0
    return out


def to_sisl(sh: SparseHamiltonian) -> Any:
    """The blocks as a `sisl.Hamiltonian` (eV, Å; non-orthogonal when S is present)."""
    sisl = _import_sisl()
    st = sh.structure
    numbers = st.numbers
    radius = _radii(sh)
    species = {}
    for z in st.species:
        orbitals = [
            sisl.Orbital(radius[z], tag=f"{k}{name}")
            for k, ell in enumerate(sh.basis.shells[z])
            for name in _COMPONENTS[ell]
        ]
        species[z] = sisl.Atom(int(z), orbitals)
    per_shift = {"H": to_csr_per_shift(sh.H, sh.basis, numbers, dtype=np.float64)}
    if sh.S is not None:
        per_shift["S"] = to_csr_per_shift(sh.S, sh.basis, numbers, dtype=np.float64)
    shifts = np.array(sorted(set().union(*(set(m) for m in per_shift.values()))), dtype=int)
    pbc = np.asarray(st.pbc, dtype=bool)
    if np.any(shifts[:, ~pbc] != 0):
        raise ValueError("blocks have lattice shifts along a non-periodic axis")
    nsc = 2 * np.abs(shifts).max(axis=0) + 1
    cell = np.asarray(st.cell, dtype=np.float64).copy()
    for a in np.flatnonzero(np.linalg.norm(cell, axis=1) == 0):  # sisl needs three vectors
        cell[a, a] = float(np.ptp(st.positions[:, a])) + 10.0
    lattice = sisl.Lattice(cell, nsc=nsc)
    geom = sisl.Geometry(st.positions, atoms=[species[int(z)] for z in numbers], lattice=lattice)
    no = geom.no

    def big(mats: dict[tuple[int, int, int], sp.csr_array]) -> sp.csr_matrix:
        rows, cols, vals = [], [], []
        for n, m in mats.items():
            coo = m.tocoo()
            isc = int(lattice.sc_index(list(n)))
            rows.append(coo.row)
            cols.append(coo.col + isc * no)
            vals.append(coo.data)
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(no, no * lattice.n_s),
        )

    S = big(per_shift["S"]) if "S" in per_shift else None
    return sisl.Hamiltonian.fromsp(geom, [big(per_shift["H"])], S=S)


def write_sisl(sh: SparseHamiltonian, path: str | os.PathLike[str]) -> Path:
    """Write ``sh`` as ``.TSHS`` (TBtrans input) or ``.nc`` (sisl/SIESTA NetCDF)."""
    out = Path(path)
    if out.suffix.lower() not in SISL_SUFFIXES:
        raise ValueError(f"{out}: sisl output must end in .TSHS or .nc")
    if out.suffix.lower() == ".nc":
        try:
            import netCDF4  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"{out}: writing .nc needs the netCDF4 package") from exc
    H = to_sisl(sh)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp.{out.name}")  # same suffix: sisl picks the format by it
    H.write(str(tmp))
    os.replace(tmp, out)
    return out


def sisl_to_csr_per_shift(H: Any) -> dict[str, dict[tuple[int, int, int], sp.csr_array]]:
    """``{"H": {shift: N × N CSR}, "S": ...}`` of a `sisl.Hamiltonian` (e.g. read back)."""
    lattice = H.geometry.lattice
    no = H.geometry.no
    ops = {"H": H.tocsr(0)}
    if not H.orthogonal:
        ops["S"] = H.tocsr(H.S_idx)
    out: dict[str, dict[tuple[int, int, int], sp.csr_array]] = {}
    for name, big in ops.items():
        big = sp.csr_array(big)
        out[name] = {}
        for isc, off in enumerate(lattice.sc_off):
            block = big[:, isc * no : (isc + 1) * no]
            if block.nnz:
                out[name][(int(off[0]), int(off[1]), int(off[2]))] = sp.csr_array(block)
    return out
