"""DeepH directories (DeepH-pack / deepx-dock layout) as training data -> `LabeledStructure`.

`read_snapshot` and `read_dataset` hand a folder to `read_deeph_snapshot` when it holds
``POSCAR``, ``info.json`` and ``hamiltonian.h5`` (and no ``atoms.extxyz``), so DeepH data sets
(a folder of such directories) train, analyse and evaluate like GEARS H snapshot folders. The
format, its orbital order (identical to ours) and its atom order are described in
`gears_h_core.io.deeph`, which does the parsing; this module adds the data-set checks of the
snapshot reader (partner rows, transposed partner blocks, symmetric on-site blocks), error
messages naming the folder and file, and the content fingerprint.

A DeepH directory has real-space blocks (never Γ-only); its ``fermi_energy_eV`` becomes
``reference.e_fermi`` (there are no reference eigenvalues) and ``info.json`` is kept in
``meta["deeph_info"]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gears_h_core.assemble.blocks import block_matrix_rows, onsite_blocks
from gears_h_core.graph.neighbors import pair_partner_index
from gears_h_core.io.deeph import (
    HAMILTONIAN_FILE,
    OVERLAP_FILE,
    DeepHFormatError,
    is_deeph_folder,
    read_deeph_folder,
)
from gears_h_core.types import BlockMatrix
from training.data.snapshot import (
    DatasetError,
    LabeledStructure,
    ReferenceEigenvalues,
    _check_onsite_symmetric,
    _check_transposes,
    _Folder,
)

__all__ = ["is_deeph_folder", "read_deeph_snapshot"]


def _partners(
    folder: _Folder, file: str, i: np.ndarray, j: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """Row index of the partner ``(j, i, −n)`` of every row; the message names ``file``."""
    try:
        return pair_partner_index(i, j, shift)
    except ValueError as exc:
        raise folder.error(file, f"{exc} (atoms in our order)") from exc


def _check(folder: _Folder, file: str, bm: BlockMatrix, numbers: np.ndarray) -> None:
    n_atoms = int(numbers.shape[0])
    i, j, shift, blocks = block_matrix_rows(bm)
    partner = _partners(folder, file, i.astype(np.int64), j.astype(np.int64), shift)
    _check_onsite_symmetric(folder, file, numbers, onsite_blocks(bm, n_atoms))
    _check_transposes(folder, file, numbers, i, j, partner, blocks)


def read_deeph_snapshot(folder: str | Path, *, validate: bool = True) -> LabeledStructure:
    """Read one DeepH directory as a `LabeledStructure`.

    Args:
        folder: the directory (``POSCAR``, ``info.json``, ``hamiltonian.h5``,
            ``overlap.h5``).
        validate: also validate the structure, partner rows, transposed partner blocks and
            symmetric on-site blocks (the layout checks always run).

    Raises:
        DatasetError: naming the folder, the file and the failed check.
    """
    path = Path(folder)
    f = _Folder(path)
    try:
        data = read_deeph_folder(path, validate=validate)
    except DeepHFormatError as exc:
        raise DatasetError(str(exc)) from exc
    sh = data.hamiltonian
    if validate:
        _check(f, HAMILTONIAN_FILE, sh.H, sh.structure.numbers)
        if sh.S is not None:
            _check(f, OVERLAP_FILE, sh.S, sh.structure.numbers)
    reference = (
        None if data.fermi_energy is None else ReferenceEigenvalues(e_fermi=data.fermi_energy)
    )
    return LabeledStructure(
        name=path.name,
        path=path,
        hamiltonian=sh,
        reference=reference,
        meta={"format": "deeph", "deeph_info": data.info},
        gamma_only=False,
        fingerprint=f.fingerprint(),
    )
