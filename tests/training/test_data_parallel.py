"""Data parallelism: one train step with the global batch split over two devices equals the
same step with the whole batch as one shard on one device (loss terms are means over the
global batch; XLA all-reduces the gradients).

JAX reads ``--xla_force_host_platform_device_count`` at start-up, so the step runs in a
subprocess with two host (CPU) devices. To keep compilation short the data are the s-orbital
sub-blocks of two butanol snapshots (the second cut to a 6-atom fragment, so the two shards
hold very different numbers of rows) and the network is tiny.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import json, sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gears_h_core.assemble.blocks import block_matrix_from_rows, block_matrix_rows, onsite_blocks
from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.model.hamiltonian import HamiltonianModel, ModelConstants
from gears_h_core.model.layout import OutputLayout
from gears_h_core.structure import Structure
from gears_h_core.testing import random_params, tiny_model_config
from gears_h_core.types import SparseHamiltonian
from training.analysis import analyze
from training.config import Config
from training.data.batching import make_sharded_batch
from training.data.snapshot import LabeledStructure, read_dataset
from training.data.targets import make_example
from training.loss import LossWeights
from training.run import DataParallel, make_ladder, make_optimizer
from training.state import TrainState
from training.steps import make_train_step

S_ONLY = OrbitalBasis.from_json_dict({"1": [0], "6": [0], "8": [0]})


def s_only(ls, keep=None):
    """The first (s) orbital of every atom, optionally of the atoms ``keep`` only."""
    sh, st = ls.hamiltonian, ls.hamiltonian.structure
    keep = np.arange(st.n_atoms) if keep is None else np.asarray(keep)
    new = np.full(st.n_atoms, -1)
    new[keep] = np.arange(len(keep))
    numbers = st.numbers[keep]

    def op(bm):
        i, j, shift, hop = block_matrix_rows(bm)
        on = onsite_blocks(bm, st.n_atoms)
        rows = np.flatnonzero((new[i] >= 0) & (new[j] >= 0))
        return block_matrix_from_rows(
            numbers, S_ONLY, [on[a][:1, :1] for a in keep], new[i[rows]], new[j[rows]],
            shift[rows], [hop[r][:1, :1] for r in rows],
        )

    structure = Structure.from_arrays(numbers, st.positions[keep], st.cell, st.pbc)
    return LabeledStructure(ls.name, ls.path, SparseHamiltonian(structure, S_ONLY, op(sh.H),
                            op(sh.S)), None, {}, False, ls.fingerprint)


full = read_dataset(Path(sys.argv[1]), limit=2)
structures = [s_only(full[0]), s_only(full[1], keep=range(6))]
analysis = analyze(structures, edge_cutoff=3.0)
layout = OutputLayout.create(analysis.basis, analysis.species)
irreps = "4x0e+2x1o+2x1e"
cfg = tiny_model_config(node_irreps=irreps, pair_irreps=irreps, sh_lmax=2, n_interactions=1,
                        avg_num_neighbors=analysis.avg_num_neighbors)
model = HamiltonianModel(cfg, layout.n_species, layout.onsite_irreps, layout.hopping_irreps)
constants = ModelConstants.create(layout, analysis.statistics)
examples = [make_example(s, layout, cfg.edge_cutoff, analysis.pair_cutoff) for s in structures]
ladder = make_ladder(examples, 2)
tx = make_optimizer(Config.model_validate({"optimizer": {"warmup_steps": 1}}), 10)
step = make_train_step(model, tx, LossWeights(), 0.9)
b0, _ = make_sharded_batch(examples, 1, ladder, layout)
params = random_params(model, jax.tree.map(lambda x: x[0], b0), constants,
                       np.random.default_rng(0))


def run(dp):
    batch, targets = make_sharded_batch(examples, dp.n_shards, ladder, layout)
    state = dp.replicate(TrainState.create(jax.tree.map(jnp.asarray, params), tx))
    batch, targets, consts = dp.shard(batch), dp.shard(targets), dp.replicate(constants)
    devices = {d for x in jax.tree.leaves(batch) for d in x.sharding.device_set}
    history = []
    for _ in range(2):
        state, m = step(state, batch, targets, consts)
        history.append({k: float(v) for k, v in m.items()})
    return jax.device_get((state.params, state.ema_params)), history, len(devices)


def excess(a, b, rtol=1e-5, atol=1e-6):
    """max over leaves of |a - b| - (atol + rtol |b|): <= 0 when allclose."""
    return max(float(np.max(np.abs(x - y) - (atol + rtol * np.abs(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


two = DataParallel.create(2)
one = DataParallel.create(2, devices=jax.local_devices()[:1])
(p2, history2, dev2), (p1, history1, dev1) = run(two), run(one)
print(json.dumps({
    "n_devices": len(jax.local_devices()),
    "n_shards": [two.n_shards, one.n_shards],
    "gcd_shards": [DataParallel.create(b).n_shards for b in (1, 3, 4)],
    "devices_used": [dev2, dev1],
    "real_atoms": [e.graph.n_atoms for e in examples],
    "history": [history2, history1],
    "params_excess": excess(p2, p1),
    "params_change": max(float(np.max(np.abs(x - np.asarray(y))))
                         for x, y in zip(jax.tree.leaves(p1[0]), jax.tree.leaves(params))),
}))
'''


@pytest.fixture(scope="module")
def result(shared_data: Path, tmp_path_factory: pytest.TempPathFactory, jax_compile_cache: Path):
    script = tmp_path_factory.mktemp("dp") / "dp_step.py"
    script.write_text(SCRIPT)
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(jax_compile_cache),
    )
    proc = subprocess.run(
        [sys.executable, str(script), str(shared_data / "butanol_pbe_def2svp" / "train")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_shards_follow_the_devices(result: dict) -> None:
    assert result["n_devices"] == 2
    assert result["n_shards"] == [2, 1]
    assert result["devices_used"] == [2, 1]  # the batch really is laid over two devices
    assert result["gcd_shards"] == [1, 1, 2]  # shards: devices that divide the batch size
    assert result["real_atoms"] == [15, 6]  # unequal shards


def test_step_on_two_devices_equals_one_device(result: dict) -> None:
    two, one = result["history"]
    for k, (m2, m1) in enumerate(zip(two, one, strict=True)):
        assert set(m2) == set(m1)
        for key in m1:
            assert m2[key] == pytest.approx(m1[key], rel=1e-5, abs=1e-7), (k, key)
    assert one[1]["loss"] != one[0]["loss"]  # the first step changed the parameters
    assert result["params_change"] > 1e-4
    assert result["params_excess"] <= 0.0  # params and EMA: rtol 1e-5, atol 1e-6
