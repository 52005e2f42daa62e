"""Loss terms are means over the whole global batch, however it is split into shards; sharded
batches are the per-shard batches stacked on a leading axis, padded to one common bucket."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from pydantic import ValidationError

from gears_h_core.model.hamiltonian import HamiltonianIrreps
from gears_h_core.model.layout import OutputLayout
from training.analysis import analyze
from training.config import LossConfig
from training.data.batching import TargetBatch, make_batch, make_sharded_batch
from training.data.snapshot import read_dataset
from training.data.targets import TrainingExample, make_example
from training.loss import LossWeights, loss_sums, loss_terms, mean_terms, total_loss
from training.run import DataParallel, make_ladder

D_ON, D_HOP = 5, 7


def fake_shard(
    rng: np.random.Generator,
    n_nodes: int,
    n_pairs: int,
    real_nodes: int,
    real_pairs: int,
    has_s: bool = True,
) -> tuple[HamiltonianIrreps, TargetBatch]:
    """Random outputs and targets of one padded shard; the first ``real_*`` rows are real and
    a random subset of channels is used."""

    def arr(*shape: int) -> np.ndarray:
        return rng.normal(size=shape).astype(np.float32)

    node_w = (rng.random((n_nodes, D_ON)) < 0.7) & (np.arange(n_nodes) < real_nodes)[:, None]
    pair_w = (rng.random((n_pairs, D_HOP)) < 0.7) & (np.arange(n_pairs) < real_pairs)[:, None]
    out = HamiltonianIrreps(
        onsite_h=arr(n_nodes, D_ON),
        hopping_h=arr(n_pairs, D_HOP),
        onsite_s=arr(n_nodes, D_ON),
        hopping_s=arr(n_pairs, D_HOP),
    )
    t = TargetBatch(
        onsite_h=arr(n_nodes, D_ON),
        hopping_h=arr(n_pairs, D_HOP),
        onsite_s=arr(n_nodes, D_ON),
        hopping_s=arr(n_pairs, D_HOP),
        onsite_weight=node_w.astype(np.float32),
        hopping_weight=pair_w.astype(np.float32),
        node_has_s=np.full(n_nodes, float(has_s), np.float32),
        pair_has_s=np.full(n_pairs, float(has_s), np.float32),
    )
    return out, t


def stack(*trees):
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def concat(*trees):
    return jax.tree.map(lambda *xs: np.concatenate(xs), *trees)


def test_loss_terms_are_weighted_mean_squared_errors() -> None:
    out, t = fake_shard(np.random.default_rng(0), 6, 10, 4, 9)
    terms = {k: float(v) for k, v in loss_terms(out, t).items()}
    assert set(terms) == {"onsite_h", "hopping_h", "onsite_s", "hopping_s"}
    for key, w in (("onsite_h", t.onsite_weight), ("hopping_h", t.hopping_weight)):
        p, y = getattr(out, key), getattr(t, key)
        expected = float(np.sum(w * (p - y) ** 2) / np.sum(w))
        assert terms[key] == pytest.approx(expected, rel=1e-6)
    weights = LossWeights(onsite_h=2.0, hopping_h=0.5, onsite_s=3.0, hopping_s=7.0)
    expected_total = sum(getattr(weights, k) * v for k, v in terms.items())
    assert float(total_loss(loss_terms(out, t), weights)) == pytest.approx(expected_total, rel=1e-6)
    # padding rows and unused channels never count
    noisy = out.replace(
        onsite_h=np.where(t.onsite_weight > 0, out.onsite_h, 1e6).astype(np.float32),
        hopping_h=np.where(t.hopping_weight > 0, out.hopping_h, -1e6).astype(np.float32),
    )
    for key in ("onsite_h", "hopping_h"):
        assert float(loss_terms(noisy, t)[key]) == pytest.approx(terms[key], rel=1e-6)


def test_absolute_error_loss_is_the_weighted_mean_absolute_error() -> None:
    """``error="absolute"``: every term is the mean |pred − target| over used channels (the
    reported MAE's weighting), padding excluded; the config carries it to LossWeights."""
    out, t = fake_shard(np.random.default_rng(3), 6, 10, 4, 9)
    terms = {k: float(v) for k, v in loss_terms(out, t, "absolute").items()}
    squared = {k: float(v) for k, v in loss_terms(out, t).items()}
    for key, w in (
        ("onsite_h", t.onsite_weight),
        ("hopping_h", t.hopping_weight),
        ("hopping_s", t.hopping_weight * t.pair_has_s[:, None]),
    ):
        p, y = getattr(out, key), getattr(t, key)
        assert terms[key] == pytest.approx(float(np.sum(w * np.abs(p - y)) / np.sum(w)), rel=1e-6)
        assert terms[key] != pytest.approx(squared[key], rel=1e-2)
    noisy = out.replace(hopping_h=np.where(t.hopping_weight > 0, out.hopping_h, 1e6))
    assert float(loss_terms(noisy, t, "absolute")["hopping_h"]) == pytest.approx(
        terms["hopping_h"], rel=1e-6
    )
    assert LossConfig(error="absolute").model_dump()["error"] == "absolute"
    assert LossWeights(**LossConfig(error="absolute").model_dump()).error == "absolute"
    with pytest.raises(ValidationError):
        LossConfig(error="huber")


def test_structures_without_s_do_not_count_in_the_s_terms() -> None:
    rng = np.random.default_rng(1)
    (out_a, t_a), (out_b, t_b) = fake_shard(rng, 6, 10, 6, 10), fake_shard(rng, 6, 10, 6, 10, False)
    both = mean_terms(jax.vmap(loss_sums)(stack(out_a, out_b), stack(t_a, t_b)))
    only_a = loss_terms(out_a, t_a)
    assert float(both["onsite_s"]) == pytest.approx(float(only_a["onsite_s"]), rel=1e-6)
    assert float(both["hopping_s"]) == pytest.approx(float(only_a["hopping_s"]), rel=1e-6)
    no_s = out_a.replace(onsite_s=None, hopping_s=None)
    assert set(loss_terms(no_s, t_a)) == {"onsite_h", "hopping_h"}


def test_sharded_mean_is_the_global_mean() -> None:
    """Shards with very different numbers of real rows: the mean over shards of the per-shard
    sums equals the loss of the concatenated batch, not the mean of per-shard means."""
    rng = np.random.default_rng(2)
    small = fake_shard(rng, 8, 20, 2, 3)
    large = fake_shard(rng, 8, 20, 8, 20)
    sharded = mean_terms(jax.vmap(loss_sums)(stack(small[0], large[0]), stack(small[1], large[1])))
    whole = loss_terms(concat(small[0], large[0]), concat(small[1], large[1]))
    per_shard = [loss_terms(*small), loss_terms(*large)]
    for key in whole:
        assert float(sharded[key]) == pytest.approx(float(whole[key]), rel=1e-6), key
        mean_of_means = 0.5 * (float(per_shard[0][key]) + float(per_shard[1][key]))
        assert abs(mean_of_means - float(whole[key])) > 1e-3 * float(whole[key]), key


# -- sharded batches of real examples ---------------------------------------------------------


@pytest.fixture(scope="module")
def examples(shared_data: Path) -> tuple[list[TrainingExample], OutputLayout, object]:
    structures = read_dataset(shared_data / "butanol_pbe_def2svp" / "train", limit=3)
    analysis = analyze(structures, edge_cutoff=3.0)
    layout = OutputLayout.create(analysis.basis, analysis.species)
    ex = [make_example(s, layout, 3.0, analysis.pair_cutoff) for s in structures]
    return ex, layout, make_ladder(ex, 3)


def test_sharded_batch_is_stacked_per_shard_batches(examples) -> None:
    ex, layout, ladder = examples
    batch, targets = make_sharded_batch(ex, 2, ladder, layout)
    # 3 structures in 2 consecutive shards: [0, 1] and [2]; one bucket for both
    bucket = ladder.select_for([e.graph for e in ex[:2]])
    parts = [make_batch(ex[:2], bucket, layout), make_batch(ex[2:], bucket, layout)]
    for k, (b, t) in enumerate(parts):
        for name, got, want in (("batch", batch, b), ("targets", targets, t)):
            leaves_got = jax.tree.leaves(jax.tree.map(lambda x: x[k], got))  # noqa: B023
            leaves_want = jax.tree.leaves(want)
            assert len(leaves_got) == len(leaves_want), name
            for x, y in zip(leaves_got, leaves_want, strict=True):
                np.testing.assert_array_equal(x, np.asarray(y), err_msg=name)
    assert np.asarray(batch.node_mask).shape == (2, bucket.n_nodes)
    real_atoms = np.asarray(batch.node_mask).sum(axis=1).tolist()
    assert real_atoms == [ex[0].graph.n_atoms + ex[1].graph.n_atoms, ex[2].graph.n_atoms]
    # every real target row is in the batch once, in order
    on = np.concatenate(
        [
            np.asarray(targets.onsite_h)[0][: real_atoms[0]],
            np.asarray(targets.onsite_h)[1][: real_atoms[1]],
        ]
    )
    np.testing.assert_array_equal(on, np.concatenate([e.onsite_h for e in ex]))


def test_sharded_batch_rejects_impossible_splits(examples) -> None:
    ex, layout, ladder = examples
    for n in (0, 4):
        with pytest.raises(ValueError, match=f"cannot split 3 structures into {n} shards"):
            make_sharded_batch(ex, n, ladder, layout)
    batch, _ = make_sharded_batch(ex, 3, ladder, layout)
    assert np.asarray(batch.node_mask).sum(axis=1).tolist() == [e.graph.n_atoms for e in ex]


def test_data_parallel_on_the_local_devices() -> None:
    n_dev = len(jax.local_devices())
    for batch_size in (1, 2, 3, 4):
        dp = DataParallel.create(batch_size)
        assert dp.n_shards == np.gcd(batch_size, n_dev)
        assert dp.mesh.axis_names == ("data",)
    dp = DataParallel.create(4, devices=jax.local_devices()[:1])
    assert dp.n_shards == 1
    x = dp.shard(np.arange(6.0).reshape(1, 6))
    np.testing.assert_array_equal(np.asarray(x), np.arange(6.0).reshape(1, 6))
    assert x.sharding.spec == jax.sharding.PartitionSpec("data")
    assert dp.replicate(np.ones(3)).sharding.spec == jax.sharding.PartitionSpec()
