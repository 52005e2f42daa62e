"""Structure validation: every rejection names the atom or field (a ValueError subclass)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

from gears_h_core.basis.orbitals import BasisError, OrbitalBasis
from gears_h_core.structure import Structure, StructureError


def test_from_ase_round_trip() -> None:
    atoms = molecule("H2O")
    s = Structure.from_ase(atoms)
    assert s.n_atoms == 3 and s.species == (1, 8)
    back = s.to_ase()
    np.testing.assert_array_equal(back.numbers, atoms.numbers)
    np.testing.assert_allclose(back.positions, atoms.positions)


@pytest.mark.parametrize(
    ("numbers", "positions", "cell", "pbc", "match"),
    [
        ([1, 0], [[0, 0, 0], [1, 0, 0]], None, False, r"atom 1: invalid atomic number 0"),
        ([1, 119], [[0, 0, 0], [1, 0, 0]], None, False, r"atom 1: invalid atomic number 119"),
        ([1, 1], [[0, 0, 0], [np.nan, 0, 0]], None, False, r"atom 1: position is not finite"),
        ([1, 1], [[0, 0, 0], [np.inf, 0, 0]], None, False, r"atom 1: position is not finite"),
        ([1, 1], [[0, 0, 0], [0.05, 0, 0]], None, False, r"atom 0: closer than 0.1"),
        (
            [1],
            [[0, 0, 0]],
            [[3, 0, 0], [6, 0, 0], [0, 0, 3]],
            [True, True, False],
            r"cell: singular",
        ),
        ([1], [[0, 0, 0]], [[3, 0, 0], [0, 0, 0], [0, 0, 3]], True, r"cell: singular"),
        ([1], [[0, 0, 0]], [[np.nan, 0, 0], [0, 3, 0], [0, 0, 3]], True, r"cell: contains NaN"),
        ([], np.zeros((0, 3)), None, False, r"no atoms"),
        ([1, 1], [[0, 0, 0]], None, False, r"positions: expected shape \[2, 3\]"),
    ],
)
def test_invalid_structures_name_the_problem(numbers, positions, cell, pbc, match) -> None:
    with pytest.raises(StructureError, match=match):
        Structure.from_arrays(numbers, positions, cell, pbc)
    assert issubclass(StructureError, ValueError)


def test_partly_periodic_cell_with_zero_vacuum_vector_is_fine() -> None:
    s = Structure.from_arrays(
        [5, 7],
        [[0, 0, 0], [1.45, 0, 0]],
        [[2.5, 0, 0], [1.25, 2.17, 0], [0, 0, 0]],
        [True, True, False],
    )
    assert s.n_atoms == 2


def test_transformed_rotates_positions_and_cell() -> None:
    s = Structure.from_arrays([1, 1], [[0, 0, 0], [1, 0, 0]], np.eye(3) * 5, True)
    rot = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    t = s.transformed(rot, np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(t.positions[1], [1, 3, 3])
    np.testing.assert_allclose(t.cell, (rot @ (np.eye(3) * 5).T).T)


def test_orbital_basis_offsets_and_errors(tmp_path) -> None:
    basis = OrbitalBasis.from_json_dict({"74": [0, 2, 1], "34": [0, 1, 2]})
    assert basis.n_orb(74) == 9
    np.testing.assert_array_equal(basis.orbital_offsets(np.array([74, 34, 34])), [0, 9, 18, 27])
    with pytest.raises(BasisError, match=r"no orbitals for element\(s\) \[8\]"):
        basis.orbital_counts(np.array([74, 8]))
    with pytest.raises(BasisError, match="l outside"):
        OrbitalBasis({1: (0, 4)})
    bad = tmp_path / "orbital_ells.json"
    bad.write_text("[1, 2]")
    with pytest.raises(BasisError, match=r"orbital_ells\.json: expected a JSON object"):
        OrbitalBasis.from_file(bad)


@pytest.mark.parametrize("distance", [0.1001, 0.3, 0.74, 0.999, 1.5])
def test_pairs_beyond_the_contact_limit_are_accepted(distance: float) -> None:
    # the check searches a wider radius than the limit and must filter by distance: an H2
    # bond (0.74 Å) or any pair just over 0.1 Å is no overlap
    s = Structure.from_arrays([1, 1, 8], [[0, 0, 0], [distance, 0, 0], [0, 3, 0]], None, False)
    assert s.n_atoms == 3


def test_contact_limit_is_inclusive_and_names_the_pair() -> None:
    with pytest.raises(StructureError, match=r"atom 1: closer than 0.1 Å to atom 2"):
        Structure.from_arrays([8, 1, 1], [[0, 3, 0], [0, 0, 0], [0.0999, 0, 0]], None, False)


def test_periodic_image_closer_than_the_limit_is_refused() -> None:
    cell = [[0.08, 0, 0], [0, 4, 0], [0, 0, 4]]
    with pytest.raises(StructureError, match=r"atom 0: closer than 0.1 Å to its own periodic"):
        Structure.from_arrays([1], [[0, 0, 0]], cell, True)


def test_a_custom_contact_limit_wider_than_the_search_radius() -> None:
    from gears_h_core.structure import CONTACT_SEARCH_RADIUS, validate_structure

    s = Structure.from_arrays([1, 1], [[0, 0, 0], [1.2, 0, 0]], None, False)
    validate_structure(s, min_distance=1.1)  # 1.2 Å apart: fine
    with pytest.raises(StructureError, match=r"closer than 1.5 Å .* \(distance 1.2000 Å\)"):
        validate_structure(s, min_distance=1.5)
    assert CONTACT_SEARCH_RADIUS < 1.5
