"""On-site S of a PAW overlap: per-species constants vs the least-squares crystal field.

Fits the on-site S field (`training.onsite_field_fit.fit_onsite_field(..., overlap=True)`)
on the h-BN training snapshots and, on the validation snapshots, compares on-site S from
per-species constants with on-site S from the field: the element MAE and max of the
on-site blocks, and the eigenvalue MAE within ±2 eV of E_F when DFT H and DFT hopping S
are solved with that on-site S (full basis, what `gears_h evaluate` measures). Prints a
table; ``--write`` puts it in bench/RESULTS.md.

    uv run python bench/onsite_overlap_field.py --write
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from results_file import command_line, write_section

from gears_h_core.model.layout import OutputLayout
from gears_h_core.model.radial import radial_basis, safe_norm
from gears_h_core.model.two_centre import TwoCentre, TwoCentreLayout
from gears_h_core.predict import decode_blocks
from gears_h_core.testing import tiny_model_config
from gears_h_core.types import SparseHamiltonian
from training.analysis import analyze
from training.data.snapshot import read_dataset
from training.data.targets import make_example
from training.evaluate import eigenvalue_errors
from training.onsite_field_fit import fit_onsite_field

EDGE_CUTOFF, N_BASIS = 5.0, 8  # the default model's interaction cutoff and field basis


def measure(data: Path) -> str:
    train = read_dataset(data / "train", limit=None)
    valid = read_dataset(data / "valid", limit=None)
    analysis = analyze(train, edge_cutoff=EDGE_CUTOFF)
    stats = analysis.statistics
    assert stats is not None
    layout = OutputLayout.create(analysis.basis, analysis.species)
    # the fit depends on the cutoff and the field basis only, not on the network widths
    config = tiny_model_config(edge_cutoff=EDGE_CUTOFF, onsite_field_basis=N_BASIS)
    examples = [make_example(s, layout, EDGE_CUTOFF, analysis.pair_cutoff) for s in train]
    fitted = fit_onsite_field(examples, layout, stats, config, overlap=True)
    tc = TwoCentreLayout.create(layout.onsite_irreps)
    term = TwoCentre(layout.onsite_irreps, layout.n_species_pairs, N_BASIS)
    rows = []
    for label, coefficients in (
        ("per-species constants", np.zeros_like(fitted)),
        ("constants + crystal field", fitted),
    ):
        element, eig = [], []
        for s in valid:
            g = make_example(s, layout, EDGE_CUTOFF, analysis.pair_cutoff).graph
            species = layout.species_table[g.structure.numbers]
            vec = jnp.asarray(g.edge_vec, jnp.float32)
            kind = jnp.asarray(layout.pair_kinds(g.structure.numbers, g.edge_i, g.edge_j))
            basis = radial_basis(safe_norm(vec), EDGE_CUTOFF, N_BASIS)
            per_edge = np.asarray(
                term.apply(
                    {"params": {"coefficients": coefficients}}, kind, basis, tc.harmonics(vec)
                )
            )
            field = np.zeros((g.n_atoms, per_edge.shape[1]))
            np.add.at(field, g.edge_i, per_edge)
            irreps = (
                np.asarray(stats.overlap_onsite)[species]
                + field * np.asarray(layout.onsite_mask)[species]
            )
            no_pairs = np.zeros((g.n_pairs, layout.hopping_irreps.dim), np.float32)
            onsite = decode_blocks(layout, g, irreps.astype(np.float32), no_pairs).onsite
            ref = s.hamiltonian
            assert ref.S is not None
            for mine, theirs in zip(onsite, ref.S.onsite, strict=True):
                assert mine.z == theirs.z
                element.append(np.abs(np.asarray(mine.blocks) - np.asarray(theirs.blocks)).ravel())
            S = dataclasses.replace(ref.S, onsite=onsite)
            eig.append(eigenvalue_errors(SparseHamiltonian(ref.structure, ref.basis, ref.H, S), s))
        e, v = np.concatenate(element), np.concatenate(eig)
        rows.append(
            f"| {label} | {e.mean():.2e} | {e.max():.2e} | {1000 * v.mean():.2f} ({v.size}) |"
        )
    return "\n".join(
        [
            f"Data `{data}`: fitted on {len(train)} training snapshots, measured on "
            f"{len(valid)} validation snapshots; field basis {N_BASIS}, cutoff "
            f"{EDGE_CUTOFF} Å.",
            "",
            "| on-site S | element MAE | element max | eigenvalue MAE (meV, states), "
            "DFT H and hopping S |",
            "|---|---:|---:|---:|",
            *rows,
        ]
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/hbn_pbe_dzp"))
    p.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = p.parse_args()
    body = measure(args.data)
    print(body)
    if args.write:
        write_section(
            "On-site S of a PAW overlap (h-BN)",
            body,
            command_line("onsite_overlap_field.py", sys.argv[1:]),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
