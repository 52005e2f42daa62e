"""The on-site crystal-field term: the model's term is fitted back exactly by least squares, on
DFT data it explains most of the on-site variation, its coefficients stay frozen in training,
and bundles from before it load without it."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.graph.neighbors import build_neighbor_graph
from gears_h_core.graph.padding import BucketLadder, pad_graphs
from gears_h_core.model.config import ModelConfig
from gears_h_core.model.hamiltonian import HamiltonianModel, ModelConstants
from gears_h_core.model.layout import OutputLayout
from gears_h_core.model.radial import radial_basis, safe_norm
from gears_h_core.model.two_centre import TwoCentre, TwoCentreLayout
from gears_h_core.testing import (
    random_params,
    random_statistics,
    rattled_boron_nitride,
    tiny_model_config,
)
from training.analysis import analyze
from training.data.targets import TrainingExample, make_example
from training.onsite_field_fit import fit_onsite_field, fit_onsite_fields
from training.two_centre_fit import ONSITE_FIELD_TERM, ONSITE_S_FIELD_TERM, frozen_labels

B, N = 5, 7
BASIS = OrbitalBasis({B: (0, 1, 0, 1, 2), N: (0, 1, 2)})
N_BASIS = 5
CONFIG = tiny_model_config(onsite_field_basis=N_BASIS)


@pytest.mark.parametrize("overlap", [False, True], ids=["H", "S"])
def test_fit_recovers_the_models_crystal_field(overlap: bool) -> None:
    """On-site targets made by the model itself (on-site readout switched off, crystal field
    with random coefficients, then scaled, shifted and symmetrised; for S added to the
    per-species constant) are reproduced by the model with the fitted coefficients: a wrong
    edge direction, neighbour species, harmonic, slot or basis in the fit would leave a
    residual."""
    layout = OutputLayout.create(BASIS, BASIS.species)
    stats = random_statistics(layout, np.random.default_rng(3), pair_cutoff=4.0)
    constants = ModelConstants.create(layout, stats)
    model = HamiltonianModel(CONFIG, layout.n_species, layout.onsite_irreps, layout.hopping_irreps)
    graphs = [
        build_neighbor_graph(rattled_boron_nitride(seed, 0.2), CONFIG.edge_cutoff, 4.0)
        for seed in range(6)
    ]
    ladder = BucketLadder(8, 8, edges_per_atom=40, pairs_per_atom=80)
    params = random_params(
        model, pad_graphs(graphs[:1], ladder.buckets[0])[0], constants, np.random.default_rng(0)
    )
    inner = dict(params["params"])
    inner["onsite"] = jax.tree.map(np.zeros_like, inner["onsite"])  # readout off
    apply = jax.jit(model.apply)
    term = ONSITE_S_FIELD_TERM if overlap else ONSITE_FIELD_TERM

    def onsite(coefficients: np.ndarray, graph) -> np.ndarray:
        p = {"params": {**inner, term: {"coefficients": coefficients}}}
        batch, _ = pad_graphs([graph], ladder.buckets[0])
        out = apply(p, batch, constants)
        return np.asarray(out.onsite_s if overlap else out.onsite_h)[: graph.n_atoms]

    truth = np.asarray(inner[term]["coefficients"])  # N(0, 1)
    zeros_on = np.zeros((graphs[0].n_atoms, layout.onsite_irreps.dim), np.float32)
    examples = [
        TrainingExample(
            name=f"bn{k}",
            graph=g,
            onsite_h=zeros_on if overlap else onsite(truth, g),
            hopping_h=np.zeros((g.n_pairs, layout.hopping_irreps.dim), np.float32),
            onsite_s=onsite(truth, g) if overlap else None,
            hopping_s=None,
            n_rows_outside=0,
        )
        for k, g in enumerate(graphs)
    ]
    fitted = fit_onsite_field(examples, layout, stats, CONFIG, overlap=overlap)
    assert fitted.shape == truth.shape
    base = np.asarray(stats.overlap_onsite if overlap else stats.onsite_shift)
    base = base[layout.species_table[graphs[0].structure.numbers]]
    for ex in examples:
        target = ex.onsite_s if overlap else ex.onsite_h
        got = onsite(fitted, ex.graph)
        field = np.abs(target - base).max()
        assert field > 1.0  # the term is not vacuous
        # the fit's relative ridge (1e-5) and float32 leave ~1e-3 of the field's largest value
        assert np.abs(got - target).max() < 3e-3 * field


@pytest.fixture(scope="module")
def hbn_fit_setup(shared_data):
    """Analysis, layout, config and examples of 3 h-BN training snapshots: the tiny network
    (the fits do not depend on the widths) with the real cutoff and basis."""
    from training.data.snapshot import read_dataset

    train = read_dataset(shared_data / "hbn_pbe_dzp" / "train", limit=3)
    analysis = analyze(train, edge_cutoff=5.0)
    assert analysis.statistics is not None
    layout = OutputLayout.create(analysis.basis, analysis.species)
    config = tiny_model_config(edge_cutoff=5.0, onsite_field_basis=8)
    examples = tuple(make_example(s, layout, 5.0, analysis.pair_cutoff) for s in train)
    return analysis, layout, config, examples


@pytest.mark.parametrize("overlap", [False, True], ids=["H", "S"])
def test_fit_on_dft_data_explains_the_onsite_blocks(hbn_fit_setup, hbn, overlap: bool) -> None:
    """Fitted on 3 h-BN training snapshots, the crystal field alone predicts a held-out
    snapshot's on-site irreps more than 10x better than the per-species means (H: measured
    564 -> 11 meV on the 3 validation snapshots when fitted on all 16). For S (the PAW
    projector terms of the neighbours, a sum of two-centre functions) more than 30x."""
    analysis, layout, config, examples = hbn_fit_setup
    stats = analysis.statistics
    fitted = fit_onsite_field(examples, layout, stats, config, overlap=overlap)
    held_out = make_example(hbn, layout, 5.0, analysis.pair_cutoff)
    target = held_out.onsite_s if overlap else held_out.onsite_h
    assert target is not None
    g = held_out.graph
    # the term as the model computes it (`test_fit_recovers_the_models_crystal_field` ties
    # the two together), without compiling the whole network for this large graph
    species = layout.species_table[g.structure.numbers]
    vec = jnp.asarray(g.edge_vec, jnp.float32)
    tc = TwoCentreLayout.create(layout.onsite_irreps)
    term = TwoCentre(layout.onsite_irreps, layout.n_species_pairs, 8)
    kind = jnp.asarray(layout.pair_kinds(g.structure.numbers, g.edge_i, g.edge_j))
    basis = radial_basis(safe_norm(vec), 5.0, 8)
    if overlap:
        shift = np.asarray(stats.overlap_onsite)[species]
        scale = np.ones_like(shift)
    else:
        shift = np.asarray(stats.onsite_shift)[species]
        scale = np.asarray(stats.onsite_scale)[species]

    def mae(coefficients: np.ndarray) -> float:
        per_edge = np.asarray(
            term.apply({"params": {"coefficients": coefficients}}, kind, basis, tc.harmonics(vec))
        )
        field = np.zeros((g.n_atoms, per_edge.shape[1]))
        np.add.at(field, g.edge_i, per_edge)
        return float(np.abs(shift + scale * field - target).mean())

    with_field, means_only = mae(fitted), mae(np.zeros_like(fitted))
    assert with_field < (1 / 30 if overlap else 0.1) * means_only, (with_field, means_only)


def test_one_pass_fits_both_fields_like_two(hbn_fit_setup) -> None:
    """`fit_onsite_fields` builds each atom's features once for H and S. Its H and S
    coefficients equal those of two single-target fits, also when a snapshot has no S (the S
    normal equations then leave it out, the H ones keep it): mixing the targets' sums or
    dropping the snapshot from H would change them."""
    analysis, layout, config, examples = hbn_fit_setup
    stats = analysis.statistics
    examples = list(examples)
    examples[1] = dataclasses.replace(examples[1], onsite_s=None, hopping_s=None)
    both = fit_onsite_fields(examples, layout, stats, config)
    h_alone = fit_onsite_field(examples, layout, stats, config)
    s_alone = fit_onsite_field(examples, layout, stats, config, overlap=True)
    np.testing.assert_allclose(both["h"], h_alone, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(both["s"], s_alone, rtol=1e-6, atol=1e-9)
    s_without = fit_onsite_field([examples[0], examples[2]], layout, stats, config, overlap=True)
    np.testing.assert_allclose(both["s"], s_without, rtol=1e-6, atol=1e-9)
    assert np.abs(both["h"] - fit_onsite_field(examples[::2], layout, stats, config)).max() > 1e-4


def test_crystal_field_coefficients_stay_frozen() -> None:
    params = {
        "params": {
            ONSITE_FIELD_TERM: {"coefficients": jnp.ones((4, 3, 5))},
            ONSITE_S_FIELD_TERM: {"coefficients": jnp.ones((4, 3, 5))},
            "onsite": {"w": jnp.ones(5)},
        }
    }
    tx = optax.multi_transform(
        {"trained": optax.sgd(0.1), "frozen": optax.set_to_zero()}, frozen_labels
    )
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    new = optax.apply_updates(params, updates)
    for term in (ONSITE_FIELD_TERM, ONSITE_S_FIELD_TERM):
        assert np.array_equal(new["params"][term]["coefficients"], jnp.ones((4, 3, 5)))
    assert not np.array_equal(new["params"]["onsite"]["w"], jnp.ones(5))


def test_bundles_before_the_crystal_field_load_without_it() -> None:
    legacy = dataclasses.asdict(ModelConfig())
    del legacy["onsite_field_basis"], legacy["onsite_overlap_field"]
    assert ModelConfig.from_dict(legacy).onsite_field_basis == 0
    assert ModelConfig.from_dict(legacy).onsite_overlap_field is False
