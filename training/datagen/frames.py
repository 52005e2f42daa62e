"""Input structure files -> frames, one snapshot folder name per frame.

Any format ASE reads; multi-frame files give one frame each. The snapshot of frame k of
``path/stem.ext`` is named ``stem`` (single-frame file) or ``stem_{k:04d}``. A sampling
record written by `training.datagen.sampling.write_samples` travels with its frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.datagen.sampling import sampling_record

if TYPE_CHECKING:
    from ase import Atoms

__all__ = ["Frame", "read_frames"]


@dataclass(frozen=True, eq=False)
class Frame:
    """One input structure.

    Attributes:
        name: snapshot folder name.
        atoms: the structure (no calculator).
        where: ``path`` or ``path frame k`` for messages.
        provenance: ``input`` (file, frame), ``geometry`` (sampling record or a note),
            ``seed`` (the sampling seed or None).
    """

    name: str
    atoms: Atoms
    where: str
    provenance: dict[str, Any]


def read_frames(paths: list[str]) -> list[Frame]:
    """Read every frame of every file.

    Raises:
        ValueError: one line naming the file (missing, unreadable, empty) or two files whose
            frames would get the same snapshot name.
    """
    from ase.io import read

    frames: list[Frame] = []
    owner: dict[str, str] = {}
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        try:
            loaded = read(path, index=":")
        except Exception as exc:  # ASE raises many types on malformed files
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"{path}: cannot be read as a structure ({msg})") from exc
        items = loaded if isinstance(loaded, list) else [loaded]
        if not items:
            raise ValueError(f"{path}: no structure found")
        for k, atoms in enumerate(items):
            single = len(items) == 1
            where = str(path) if single else f"{path} frame {k}"
            if len(atoms) == 0:
                raise ValueError(f"{where}: no atoms")
            name = path.stem if single else f"{path.stem}_{k:04d}"
            if name in owner:
                raise ValueError(
                    f"{where}: snapshot name {name!r} already used by {owner[name]} "
                    f"(rename one of the files)"
                )
            owner[name] = where
            record = sampling_record(atoms)
            a = atoms.copy()
            a.calc = None
            frames.append(
                Frame(
                    name=name,
                    atoms=a,
                    where=where,
                    provenance={
                        "input": {"file": str(path), "frame": k},
                        "geometry": record
                        if record is not None
                        else {"method": "as given in the input file"},
                        "seed": None if record is None else record.get("seed"),
                    },
                )
            )
    return frames
