"""Structure text and files -> `Structure`s (ASE readers, errors that name the frame).

One place for the two ways structures arrive: as text with a declared format (the service's
``POST /infer`` body: ``extxyz`` or ``cif``) and as files of any format ASE can read
(``gears_h infer``). Multi-frame inputs give one structure per frame. Every failure is a
`StructureTextError` (a `StructureError`) whose message names the source and the frame.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from gears_h_core.structure import Structure, StructureError

#: wire/HTTP format name -> ASE format name
TEXT_FORMATS = {"extxyz": "extxyz", "cif": "cif"}


class StructureTextError(StructureError):
    """Structure text or a file that cannot be parsed (as opposed to an invalid structure)."""


def _frames_to_structures(frames: object, source: str) -> list[Structure]:
    from ase import Atoms

    if isinstance(frames, Atoms):
        frames = [frames]
    if not isinstance(frames, list) or not frames:
        raise StructureTextError(f"{source}: no structure found")
    out = []
    for k, atoms in enumerate(frames):
        where = source if len(frames) == 1 else f"{source} frame {k}"
        if len(atoms) == 0:
            raise StructureTextError(f"{where}: no atoms")
        try:
            out.append(Structure.from_ase(atoms))
        except StructureError as exc:
            raise StructureError(f"{where}: {exc}") from exc
    return out


def _check_xyz_headers(text: str, source: str) -> None:
    """Refuse frames that declare more atoms than lines follow.

    ASE's extxyz reader skips ``n_atoms`` lines one by one before parsing, so a header such as
    ``999999999999`` would keep a thread busy for hours. Walks the frames the way ASE does.
    """
    lines = text.split("\n")
    pos, frame = 0, 0
    while pos < len(lines) and lines[pos].strip():
        try:
            n_atoms = int(lines[pos])
        except ValueError:
            return  # not a header: ASE reports it
        left = len(lines) - pos - 2
        if n_atoms > max(left, 0):
            raise StructureTextError(
                f"{source} frame {frame}: header declares {n_atoms} atoms but only "
                f"{max(left, 0)} line(s) follow"
            )
        pos += 2 + max(n_atoms, 0)
        while pos < len(lines) and lines[pos].lstrip().startswith("VEC"):
            pos += 1
        frame += 1


def parse_structures(fmt: str, text: str, *, source: str = "structure") -> list[Structure]:
    """Parse ``text`` in format ``fmt`` (``extxyz`` or ``cif``); one `Structure` per frame.

    Raises:
        StructureTextError: unknown format or text ASE cannot read (malformed input).
        StructureError: a frame that parses but is not a valid structure (NaN, overlap, ...).
    """
    if fmt not in TEXT_FORMATS:
        raise StructureTextError(f"{source}: unknown format {fmt!r} (use extxyz or cif)")
    import warnings

    from ase.io import read as ase_read

    if fmt == "extxyz":
        _check_xyz_headers(text, source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames = ase_read(io.StringIO(text), index=":", format=TEXT_FORMATS[fmt])
    except Exception as exc:  # ASE raises many exception types on malformed text
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StructureTextError(f"{source}: cannot be read as {fmt}: {msg}") from exc
    return _frames_to_structures(frames, source)


def read_structure_files(paths: list[str | os.PathLike[str]]) -> list[Structure]:
    """Every frame of every file (format guessed by ASE from the name/content)."""
    import warnings

    from ase.io import read as ase_read

    out: list[Structure] = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise StructureTextError(f"{path}: no such file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frames = ase_read(path, index=":")
        except Exception as exc:  # ASE raises many exception types
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StructureTextError(f"{path}: cannot be read as a structure: {msg}") from exc
        out.extend(_frames_to_structures(frames, str(path)))
    return out
