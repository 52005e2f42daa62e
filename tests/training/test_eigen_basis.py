"""The eigenbasis loss term (`training.eigen_basis`): its reference eigenvectors diagonalise
the stored H and S, its device computation of Cᵀ δH C matches the dense host computation from
decoded blocks graph by graph in a padded batch, and a run with it trains and reports
eigenvalues."""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gears_h_core.assemble.sparse import gamma_fold
from gears_h_core.model.hamiltonian import HamiltonianModel, ModelConstants
from gears_h_core.model.layout import OutputLayout
from gears_h_core.predict import decode_blocks
from gears_h_core.testing import random_params, tiny_model_config
from training.analysis import analyze
from training.data.batching import make_batch
from training.data.targets import make_example
from training.eigen_basis import EigenTables, eigenbasis_error, reference_eigenvectors
from training.run import make_ladder


def test_reference_eigenvectors_diagonalise_the_stored_matrices(butanol) -> None:
    """Cᵀ S C = 1 and Cᵀ H C = diag(ε) with ε PySCF's own eigenvalues at Γ (stored in
    ref_eigenvalues.npz): the Γ fold, the orbital order and the solve agree with the data."""
    c = reference_eigenvectors(butanol, max_orbitals=1024).astype(np.float64)
    sh = butanol.hamiltonian
    h = gamma_fold(sh.H, sh.basis, sh.structure.numbers).toarray()
    s = gamma_fold(sh.S, sh.basis, sh.structure.numbers).toarray()
    np.testing.assert_allclose(c.T @ s @ c, np.eye(len(c)), atol=2e-3)
    eps = np.diag(c.T @ h @ c)
    ref = butanol.reference.eps_gamma
    np.testing.assert_allclose(np.sort(eps)[:40], ref[:40], atol=2e-3)
    assert reference_eigenvectors(butanol, max_orbitals=len(c) - 1) is None


def test_device_error_matches_the_dense_host_error(shared_data) -> None:
    """Two butanol snapshots in one padded batch with a random model: E = Cᵀ δH C computed on
    device (padded decoders, orbital offsets, scatter per graph) equals, graph by graph, the
    dense computation from the decoded blocks of prediction and target folded to Γ. A wrong
    offset, decoder, transpose or a mix of the two graphs' errors would not."""
    from training.data.snapshot import read_dataset

    labeled = read_dataset(shared_data / "butanol_pbe_def2svp" / "train", limit=2)
    analysis = analyze(labeled, edge_cutoff=5.0)
    assert analysis.statistics is not None
    layout = OutputLayout.create(analysis.basis, analysis.species)
    config = tiny_model_config(edge_cutoff=5.0)
    examples = [make_example(s, layout, 5.0, analysis.pair_cutoff) for s in labeled]
    vectors = [reference_eigenvectors(s, 1024) for s in labeled]
    examples = [replace(e, eigvecs=v) for e, v in zip(examples, vectors, strict=True)]
    size = max(v.shape[0] for v in vectors) + 6  # padded beyond the largest structure
    bucket = make_ladder(examples, 3).select_for([e.graph for e in examples])
    batch, targets = make_batch(examples, bucket, layout, size)
    constants = ModelConstants.create(layout, analysis.statistics)
    model = HamiltonianModel(config, layout.n_species, layout.onsite_irreps, layout.hopping_irreps)
    params = random_params(model, batch, constants, np.random.default_rng(1))
    out = jax.jit(model.apply)(params, jax.tree.map(jnp.asarray, batch), constants)
    e = np.asarray(
        eigenbasis_error(out, jax.tree.map(jnp.asarray, batch), targets, EigenTables.create(layout))
    )
    assert e.shape == (bucket.n_graphs, size, size)
    node, pair = 0, 0
    for g, (ex, c) in enumerate(zip(examples, vectors, strict=True)):
        graph = ex.graph
        nodes = slice(node, node + graph.n_atoms)
        pairs = slice(pair, pair + graph.n_pairs)
        node, pair = node + graph.n_atoms, pair + graph.n_pairs
        numbers = graph.structure.numbers
        pred = decode_blocks(
            layout, graph, np.asarray(out.onsite_h)[nodes], np.asarray(out.hopping_h)[pairs]
        )
        ref = decode_blocks(layout, graph, ex.onsite_h, ex.hopping_h)
        delta = (
            gamma_fold(pred, layout.basis, numbers) - gamma_fold(ref, layout.basis, numbers)
        ).toarray()
        want = c.astype(np.float64).T @ delta @ c.astype(np.float64)
        n = len(c)
        scale = np.abs(want).max()
        assert scale > 1.0  # a random model is far off: the comparison is not vacuous
        np.testing.assert_allclose(e[g, :n, :n], want, atol=2e-5 * scale)
        assert not np.any(e[g, n:, :]) and not np.any(e[g, :, n:])
    assert not np.any(e[len(examples) :])  # the dummy graph
    assert targets.eig_count.tolist()[: len(examples)] == [len(v) ** 2 for v in vectors]


@pytest.mark.parametrize("max_orbitals", [1024, 8])
def test_run_with_the_eigenbasis_term(tmp_path, shared_data, max_orbitals: int) -> None:
    """A short butanol run with loss.eigen_h > 0 logs the term and the validation
    eigenvalue MAE; when no structure fits loss.eigen_max_orbitals the run stops with a
    one-line error naming the setting."""
    import shutil

    from training.config import Config
    from training.run import RunError, train

    data = shared_data / "butanol_pbe_def2svp"
    valid = tmp_path / "valid"
    shutil.copytree(data / "valid" / "butanol_100", valid / "butanol_100")
    config = Config.model_validate(
        {
            "run_dir": str(tmp_path / "run"),
            "data": {"train": [str(data / "train")], "valid": [str(valid)], "n_train": 2},
            "model": tiny_model_config(edge_cutoff=5.0).to_dict(),
            "loss": {"eigen_h": 0.01, "eigen_max_orbitals": max_orbitals},
            "training": {"epochs": 1, "batch_size": 1},
        }
    )
    if max_orbitals < 100:
        with pytest.raises(RunError, match=r"loss\.eigen_max_orbitals"):
            train(config)
        return
    metrics = train(config)
    assert metrics["train_eigen_h"] > 0
    # one epoch of a tiny model: its S may not be positive definite yet, then it is counted
    if metrics["val_eig_failed"] == 0:
        assert metrics["val_eig_mae_meV"] > 0
    else:
        assert metrics["val_eig_failed"] == 1 and "val_eig_mae_meV" not in metrics
