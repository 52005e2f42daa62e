"""Restricted unpickler for ``.npz`` object arrays: numpy arrays load, anything else is refused."""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.data.safe_npz import NpzError, UnsafePickleError, load_npz


class _SystemPayload:
    """Would run a shell command when unpickled (never run by these tests)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _OpenPayload:
    """Creates ``marker`` when unpickled (``open(marker, "w")``): harmless, but real."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _object_array(items: list[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for k, item in enumerate(items):
        out[k] = item
    return out


def test_legitimate_object_and_plain_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=s).astype(np.float32) for s in ((14, 14), (14, 5), (5, 5))]
    path = tmp_path / "ok.npz"
    ij = np.array([[0, 1], [1, 0]])
    np.savez_compressed(path, hblocks=_object_array(blocks), ij=ij, D=rng.normal(size=(2, 3)))
    got = load_npz(path)
    assert set(got) == {"hblocks", "ij", "D"}
    assert got["hblocks"].dtype == object and got["hblocks"].shape == (3,)
    for a, b in zip(got["hblocks"], blocks, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got["ij"], ij)
    assert got["D"].dtype == np.float64


def test_numpy_scalars_and_nested_arrays(tmp_path: Path) -> None:
    path = tmp_path / "scalars.npz"
    items = [np.float32(1.5), np.int64(3), np.arange(3.0), _object_array([np.eye(2)])]
    np.savez(path, x=_object_array(items))
    got = load_npz(path)["x"]
    assert got[0] == np.float32(1.5) and got[1] == 3
    np.testing.assert_array_equal(got[3][0], np.eye(2))


def test_payload_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    np.savez(path, hblocks=_object_array([np.eye(2, dtype=np.float32), _SystemPayload(marker)]))
    with pytest.raises(UnsafePickleError) as info:
        load_npz(path)
    message = str(info.value)
    assert str(path) in message and "'hblocks'" in message
    assert f"{os.system.__module__}.system" in message  # posix.system on Linux
    assert not marker.exists()


def test_open_payload_is_real_but_refused(tmp_path: Path) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_OpenPayload(control))).close()  # the payload works ...
    assert control.exists()
    marker = tmp_path / "marker"
    path = tmp_path / "evil_open.npz"
    np.savez_compressed(path, blocks=_object_array([_OpenPayload(marker)]))
    with pytest.raises(UnsafePickleError, match=re.escape(f"{open.__module__}.open")):
        load_npz(path)
    assert not marker.exists()  # ... but not through load_npz


def test_non_numpy_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "odict.npz"
    np.savez(path, sblocks=_object_array([OrderedDict(a=1)]))
    with pytest.raises(
        UnsafePickleError, match=r"odict\.npz: member 'sblocks'.*collections\.OrderedDict"
    ):
        load_npz(path)
    assert issubclass(UnsafePickleError, ValueError)


def test_reconstruct_only_builds_ndarray(tmp_path: Path) -> None:
    # A pickle calling numpy's _reconstruct with a subclass named elsewhere is refused at
    # find_class; a masked array (numpy.ma) is not array reconstruction either.
    path = tmp_path / "masked.npz"
    np.savez(path, x=_object_array([np.ma.masked_array([1.0, 2.0], mask=[0, 1])]))
    with pytest.raises(UnsafePickleError, match=r"numpy\.ma"):
        load_npz(path)


def test_size_caps(tmp_path: Path) -> None:
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, big=np.zeros(4_000_000, dtype=np.float64))  # 32 MB -> ~30 KB
    assert path.stat().st_size < 100_000
    with pytest.raises(NpzError, match="over the limit of 1000000"):
        load_npz(path, max_member_bytes=1_000_000)
    with pytest.raises(NpzError, match="over the limit of 2000000"):
        load_npz(path, max_total_bytes=2_000_000)
    assert load_npz(path)["big"].shape == (4_000_000,)


def test_header_promising_more_data_than_stored(tmp_path: Path) -> None:
    buf = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
    np.lib.format.write_array_header_1_0(buf, header)
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", buf.getvalue() + b"\0" * 64)
    with pytest.raises(NpzError, match=r"header declares \(1000000000000,\) float64"):
        load_npz(path)


def test_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"definitely not a zip file")
    with pytest.raises(NpzError, match=r"junk\.npz: not a readable \.npz archive"):
        load_npz(path)
    corrupt = tmp_path / "corrupt.npz"
    with zipfile.ZipFile(corrupt, "w") as zf:
        zf.writestr("x.npy", b"\x93NUMPY garbage")
    with pytest.raises(NpzError, match=r"member 'x' cannot be read"):
        load_npz(corrupt)


def test_file_object_and_name(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, a=np.arange(4))
    got = load_npz(io.BytesIO(buf.getvalue()), name="in-memory.npz")
    np.testing.assert_array_equal(got["a"], np.arange(4))


def test_shipped_files_match_numpy(shared_data: Path) -> None:
    """Both pickle layouts of the shipped data (numpy 2 float32 blocks, numpy 1 floats)."""
    folders = [
        sorted((shared_data / "hbn_pbe_dzp" / "valid").iterdir())[0],
        sorted((shared_data / "wse2_gearsh_example" / "validation_data").iterdir())[0],
    ]
    for folder in folders:
        for path in sorted(folder.glob("*.npz")):
            ours = load_npz(path)
            with np.load(path, allow_pickle=True) as ref:  # trusted shipped data
                assert set(ours) == set(ref.files)
                for key in ref.files:
                    a, b = ours[key], ref[key]
                    assert a.shape == b.shape and a.dtype == b.dtype
                    if a.dtype == object and a.ndim > 1:  # WSe2: Python floats
                        np.testing.assert_array_equal(a.astype(np.float64), b.astype(np.float64))
                    elif a.dtype == object:
                        assert all(
                            np.array_equal(np.asarray(x), np.asarray(y))
                            for x, y in zip(a.flat, b.flat, strict=True)
                        )
                    else:
                        np.testing.assert_array_equal(a, b)
    wse2 = load_npz(folders[1] / "hblocks_on-diagonal.npz")
    assert wse2["hblocks"].shape == (107, 9, 9) and "allow_pickle" in wse2
