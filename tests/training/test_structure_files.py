"""Structure text/files -> `Structure`s (gears_h_core.io.structures) and where a model comes
from (gears_h_core.io.model_source): one structure per frame, errors that name the frame."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from gears_h_core.io import model_source
from gears_h_core.io.bundle import MANIFEST, BundleError
from gears_h_core.io.structures import (
    StructureTextError,
    parse_structures,
    read_structure_files,
)
from gears_h_core.structure import StructureError


def water(shift: float = 0.0) -> Atoms:
    pos = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]) + shift
    return Atoms("OH2", positions=pos)


def slab() -> Atoms:
    a = 2.5
    cell = [[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, 15.0]]
    return Atoms("BN", scaled_positions=[[0, 0, 0.5], [1 / 3, 2 / 3, 0.5]], cell=cell, pbc=True)


def text(frames: list[Atoms], fmt: str) -> str:
    if fmt == "cif":  # ASE writes CIF to binary streams only
        raw = io.BytesIO()
        write(raw, frames, format=fmt)
        return raw.getvalue().decode()
    buf = io.StringIO()
    write(buf, frames if len(frames) > 1 else frames[0], format=fmt)
    return buf.getvalue()


def test_extxyz_gives_one_structure_per_frame() -> None:
    frames = [water(), water(0.5), slab()]
    out = parse_structures("extxyz", text(frames, "extxyz"))
    assert len(out) == 3
    for s, a in zip(out, frames, strict=True):
        np.testing.assert_array_equal(s.numbers, a.numbers)
        np.testing.assert_allclose(s.positions, a.positions, atol=1e-8)
        np.testing.assert_array_equal(s.pbc, a.pbc)
    np.testing.assert_allclose(out[2].cell, slab().cell[:], atol=1e-8)


def test_cif_is_periodic() -> None:
    [s] = parse_structures("cif", text([slab()], "cif"))
    assert s.pbc.all()
    np.testing.assert_allclose(np.abs(np.linalg.det(s.cell)), abs(slab().get_volume()), rtol=1e-6)
    assert sorted(s.numbers.tolist()) == [5, 7]


def test_unknown_format_and_malformed_text() -> None:
    with pytest.raises(
        StructureTextError, match=r"body: unknown format 'xyz' \(use extxyz or cif\)"
    ):
        parse_structures("xyz", text([water()], "extxyz"), source="body")
    with pytest.raises(StructureTextError, match=r"^structure: cannot be read as extxyz: "):
        parse_structures("extxyz", "2\nLattice=oops\nO 0 0\nH 1 1\n")
    # a header that declares more atoms than lines follow fails at once (never read line by line)
    with pytest.raises(StructureTextError, match=r"^big frame 1: header declares 999999999999"):
        parse_structures("extxyz", text([water()], "extxyz") + "999999999999\n\n", source="big")
    with pytest.raises(StructureTextError, match=r"^s: no structure found"):
        parse_structures("extxyz", "", source="s")


def test_invalid_frame_is_named() -> None:
    bad = water()
    bad.positions[2] = bad.positions[0]  # two atoms on top of each other
    with pytest.raises(StructureError, match=r"^upload frame 1: ") as info:
        parse_structures("extxyz", text([water(), bad], "extxyz"), source="upload")
    assert not isinstance(info.value, StructureTextError)  # parsed fine, invalid structure
    with pytest.raises(StructureError, match=r"^one: "):
        parse_structures("extxyz", text([bad], "extxyz"), source="one")


def test_read_structure_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.extxyz", tmp_path / "b.cif"
    write(a, [water(), water(1.0)], format="extxyz")
    write(b, slab(), format="cif")
    out = read_structure_files([a, str(b)])
    assert [s.n_atoms for s in out] == [3, 3, 2]  # files in order, frames in order
    assert out[2].pbc.all() and not out[0].pbc.any()
    with pytest.raises(StructureTextError, match=r"missing\.xyz: no such file"):
        read_structure_files([a, tmp_path / "missing.xyz"])
    with pytest.raises(StructureTextError, match=r"no such file"):
        read_structure_files([tmp_path])  # a folder is not a structure file
    junk = tmp_path / "junk.extxyz"
    junk.write_text("this is not\na structure\n")
    with pytest.raises(StructureTextError, match=r"junk\.extxyz: cannot be read as a structure"):
        read_structure_files([junk])
    bad = water()
    bad.positions[1] = bad.positions[0]
    write(tmp_path / "bad.extxyz", [water(), water(), bad], format="extxyz")
    with pytest.raises(StructureError, match=r"bad\.extxyz frame 2: "):
        read_structure_files([tmp_path / "bad.extxyz"])


# -- model source -------------------------------------------------------------------------------


def test_resolve_bundle_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BundleError, match=r"nowhere: no such model"):
        model_source.resolve_bundle_path(tmp_path / "nowhere")
    with pytest.raises(BundleError, match=rf"not a model bundle \({MANIFEST} is missing\)"):
        model_source.resolve_bundle_path(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({}))
    assert model_source.resolve_bundle_path(str(tmp_path)) == tmp_path
    # "default" is the committed bundle, never a folder named "default" in the working dir
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / MANIFEST).write_text("{}")
    shipped = tmp_path / "shipped"
    monkeypatch.setattr(model_source, "default_bundle_path", lambda: shipped)
    with pytest.raises(BundleError, match="default model bundle is missing"):
        model_source.resolve_bundle_path("default")
    shipped.mkdir()
    (shipped / MANIFEST).write_text("{}")
    assert model_source.resolve_bundle_path("default") == shipped


def test_default_bundle_path_is_inside_the_package() -> None:
    import gears_h_core

    root = Path(gears_h_core.__file__).resolve().parent
    assert model_source.default_bundle_path() == root / "models" / "default"
