"""A training run, top to bottom: data -> analysis -> examples -> model -> loop -> checkpoints.

The run directory holds ``config.yaml`` (resolved), ``analysis.json``, ``metrics.jsonl`` and
``checkpoints/{latest,best}``. ``resume=True`` restores the latest checkpoint and continues
with the same per-epoch shuffling (seeded by (seed, epoch)), so a resumed run reproduces the
metrics of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml

from gears_h_core.graph.padding import BucketLadder, pad_graphs
from gears_h_core.io.atomic_file import write_bytes_atomic
from gears_h_core.model.hamiltonian import HamiltonianModel, ModelConstants
from gears_h_core.model.layout import OutputLayout
from gears_h_core.predict import decode_blocks
from gears_h_core.types import SparseHamiltonian
from training.analysis import Analysis, analyze
from training.checkpoints import RunCheckpoints
from training.config import AdamWConfig, Config
from training.data.batching import make_batch, make_sharded_batch
from training.data.snapshot import LabeledStructure, read_dataset
from training.data.targets import TrainingExample, make_example
from training.eigen_basis import EigenTables, reference_eigenvectors
from training.evaluate import ErrorAccumulator, eigenvalue_errors
from training.loss import LossWeights
from training.onsite_field_fit import fit_onsite_fields
from training.state import TrainState
from training.steps import make_train_step
from training.two_centre_fit import (
    ONSITE_FIELD_TERM,
    ONSITE_S_FIELD_TERM,
    fit_two_centre,
    frozen_labels,
    with_two_centre,
)

Logger = Callable[[dict[str, Any]], None]


class RunError(ValueError):
    """A run that cannot start (no data, config mismatch on resume, ...)."""


def _write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def load_structures(paths: Sequence[Path], limit: int | None) -> list[LabeledStructure]:
    out: list[LabeledStructure] = []
    for p in paths:
        out.extend(read_dataset(p, limit=limit))
    return out


def make_optimizer(config: Config, total_steps: int) -> optax.GradientTransformation:
    opt = config.optimizer
    peak = opt.algorithm.learning_rate
    warmup = min(opt.warmup_steps, max(total_steps - 1, 0))
    if opt.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            peak * 0.01,
            peak,
            max(warmup, 1),
            max(total_steps, warmup + 1),
            peak * opt.final_lr_fraction,
        )
    else:
        schedule = optax.join_schedules(
            [
                optax.linear_schedule(peak * 0.01, peak, max(warmup, 1)),
                optax.constant_schedule(peak),
            ],
            [max(warmup, 1)],
        )
    if isinstance(opt.algorithm, AdamWConfig):
        base = optax.adamw(schedule, weight_decay=opt.algorithm.weight_decay)
    else:
        base = optax.adam(schedule)
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip), base)
    if config.model.has_fitted_terms:  # least-squares terms stay as fitted
        return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, frozen_labels)
    return tx


def make_ladder(examples: Sequence[TrainingExample], max_graphs: int) -> BucketLadder:
    atoms = [e.graph.n_atoms for e in examples]
    edges = max(e.graph.n_edges / e.graph.n_atoms for e in examples)
    pairs = max(e.graph.n_pairs / e.graph.n_atoms for e in examples)
    return BucketLadder(
        min(atoms),
        max(atoms) * max_graphs,
        1.5,
        edges_per_atom=math.ceil(edges * 1.05),
        pairs_per_atom=math.ceil(pairs * 1.05),
        max_graphs=max_graphs,
    )


@dataclass
class RunSetup:
    config: Config
    analysis: Analysis
    layout: OutputLayout
    model: HamiltonianModel
    constants: ModelConstants
    ladder: BucketLadder
    train: list[TrainingExample]
    valid: list[tuple[TrainingExample, LabeledStructure]]
    fingerprint: str
    # the eigenbasis loss term (`training.eigen_basis`): its tables and the padded size of
    # the eigenvectors, or None and 0 when loss.eigen_h is 0
    eigen: EigenTables | None = None
    eigen_size: int = 0


def setup(config: Config) -> RunSetup:
    train_structs = load_structures(config.data.train, config.data.n_train)
    if not train_structs:
        raise RunError(
            f"data.train: no snapshot folders found in {[str(p) for p in config.data.train]}"
        )
    valid_structs = load_structures(config.data.valid, None)
    analysis_path = config.run_dir / "analysis.json"
    if analysis_path.is_file():
        analysis = Analysis.from_json(json.loads(analysis_path.read_text()))
    else:
        analysis = analyze(train_structs, edge_cutoff=config.model.edge_cutoff)
        _write_text_atomic(analysis_path, json.dumps(analysis.to_json()) + "\n")
    unknown = sorted(
        {z for s in valid_structs for z in s.hamiltonian.structure.species} - set(analysis.species)
    )
    if unknown:
        raise RunError(f"data.valid: element(s) {unknown} do not occur in the training data")
    model_cfg = replace(config.model, avg_num_neighbors=analysis.avg_num_neighbors)
    config = config.model_copy(update={"model": model_cfg})
    layout = OutputLayout.create(analysis.basis, analysis.species)
    assert analysis.statistics is not None
    constants = ModelConstants.create(layout, analysis.statistics)
    model = HamiltonianModel(
        model_cfg, layout.n_species, layout.onsite_irreps, layout.hopping_irreps
    )

    use_eigen = config.loss.eigen_h > 0

    def example(s: LabeledStructure, *, eigen: bool = False) -> TrainingExample:
        ex = make_example(s, layout, model_cfg.edge_cutoff, analysis.pair_cutoff)
        if eigen:
            try:
                vectors = reference_eigenvectors(s, config.loss.eigen_max_orbitals)
            except ValueError as exc:
                raise RunError(str(exc)) from exc
            ex = replace(ex, eigvecs=vectors)
        return ex

    # only training batches carry eigenvectors; validation measures eigenvalues directly
    train = [example(s, eigen=use_eigen) for s in train_structs]
    valid = [(example(s), s) for s in valid_structs]
    ladder = make_ladder(train + [v[0] for v in valid], config.training.batch_size)
    fp = hashlib.sha256("".join(sorted(s.fingerprint for s in train_structs)).encode()).hexdigest()
    sizes = [e.eigvecs.shape[0] for e in train if e.eigvecs is not None]
    if use_eigen and not sizes:
        raise RunError(
            f"loss.eigen_h: no training structure has S and at most "
            f"{config.loss.eigen_max_orbitals} orbitals (loss.eigen_max_orbitals)"
        )
    return RunSetup(
        config,
        analysis,
        layout,
        model,
        constants,
        ladder,
        train,
        valid,
        fp,
        EigenTables.create(layout) if use_eigen else None,
        max(sizes, default=0),
    )


RUN_INFO = "run_info.json"


def run_info(run: RunSetup) -> dict[str, Any]:
    """What export needs besides config, analysis and checkpoints: data provenance and the
    graph densities (edges and pairs per atom) that size the serving bucket ladder."""
    examples = run.train + [v[0] for v in run.valid]
    return {
        "training_data_fingerprint": run.fingerprint,
        "n_train": len(run.train),
        "n_valid": len(run.valid),
        "train_sets": [str(p) for p in run.config.data.train],
        "valid_sets": [str(p) for p in run.config.data.valid],
        "max_atoms": max(e.graph.n_atoms for e in examples),
        "edges_per_atom": max(e.graph.n_edges / e.graph.n_atoms for e in examples),
        "pairs_per_atom": max(e.graph.n_pairs / e.graph.n_atoms for e in examples),
        # every structure's (edges, pairs) per atom: export sizes a sparser bucket tier for
        # data that mix sparse (molecules) and dense (crystals) graphs
        "graph_densities": sorted(
            {
                (
                    round(e.graph.n_edges / e.graph.n_atoms, 2),
                    round(e.graph.n_pairs / e.graph.n_atoms, 2),
                )
                for e in examples
            }
        ),
    }


@dataclass(frozen=True)
class DataParallel:
    """Placement of a step's inputs: the shard axis over a 1-D device mesh ``("data",)``,
    the train state and constants replicated. XLA partitions the step's vmap over shards
    across the devices and all-reduces the gradients.

    ``n_shards`` is the number of local devices that divides the global batch size (all of
    them when it divides). Single host only; see the README for the multi-host route.
    """

    mesh: jax.sharding.Mesh

    @classmethod
    def create(cls, batch_size: int, devices: Sequence[Any] | None = None) -> DataParallel:
        devices = list(jax.local_devices() if devices is None else devices)
        n = math.gcd(batch_size, len(devices))
        return cls(jax.sharding.Mesh(np.asarray(devices[:n]), ("data",)))

    @property
    def n_shards(self) -> int:
        return int(self.mesh.devices.size)

    def shard(self, tree: Any) -> Any:
        spec = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("data"))
        return jax.device_put(tree, spec)

    def replicate(self, tree: Any) -> Any:
        spec = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        return jax.device_put(tree, spec)


def init_state(
    run: RunSetup, tx: optax.GradientTransformation, *, fit: bool = True
) -> tuple[TrainState, float | None]:
    """Fresh parameters, with the two-centre terms and the on-site crystal field fitted by
    least squares (unless ``fit`` is False: a resumed run restores them); returns the state
    and the fit's seconds."""
    bucket = run.ladder.select_for([run.train[0].graph])
    batch, _ = make_batch(run.train[:1], bucket, run.layout)
    key = jax.random.PRNGKey(run.config.training.seed)
    params = jax.jit(run.model.init)(key, jax.tree.map(jnp.asarray, batch), run.constants)
    fit_s = None
    cfg = run.config.model
    if fit and cfg.has_fitted_terms:
        stats = run.analysis.statistics
        assert stats is not None
        t = time.monotonic()
        fitted = {}
        if cfg.two_centre_basis > 0:
            fitted.update(fit_two_centre(run.train, run.layout, stats, cfg))
        if cfg.onsite_field_basis > 0:
            fields = fit_onsite_fields(
                run.train,
                run.layout,
                stats,
                cfg,
                targets=("h", "s") if cfg.has_onsite_s_field else ("h",),
            )
            fitted[ONSITE_FIELD_TERM] = fields["h"]
            if cfg.has_onsite_s_field:
                fitted[ONSITE_S_FIELD_TERM] = fields["s"]
        params = with_two_centre(params, fitted)
        fit_s = time.monotonic() - t
    return TrainState.create(params, tx), fit_s


def validate(run: RunSetup, params: Any, apply: Callable[..., Any]) -> dict[str, float] | None:
    if not run.valid:
        return None
    acc_h, acc_s = ErrorAccumulator(), ErrorAccumulator()
    eig_errors: list[np.ndarray] = []
    eig_failed = 0
    for ex, labeled in run.valid:
        bucket = run.ladder.select_for([ex.graph])
        batch, layout = pad_graphs([ex.graph], bucket)
        out = jax.device_get(apply(params, jax.tree.map(jnp.asarray, batch), run.constants))
        nodes, pairs = layout.node_slice(0), layout.pair_slice(0)
        ref = labeled.hamiltonian
        pred_h = decode_blocks(
            run.layout, ex.graph, np.asarray(out.onsite_h)[nodes], np.asarray(out.hopping_h)[pairs]
        )
        acc_h.add(pred_h, ref.H, ex.graph.n_atoms)
        if ref.S is not None and out.onsite_s is not None:
            pred_s = decode_blocks(
                run.layout,
                ex.graph,
                np.asarray(out.onsite_s)[nodes],
                np.asarray(out.hopping_s)[pairs],
            )
            acc_s.add(pred_s, ref.S, ex.graph.n_atoms)
            if run.eigen is not None:  # what the eigenbasis term is for, measured
                pred = SparseHamiltonian(ref.structure, ref.basis, pred_h, pred_s)
                try:
                    eig_errors.append(eigenvalue_errors(pred, labeled))
                except np.linalg.LinAlgError:  # predicted S(k) not positive definite
                    eig_failed += 1
    h = acc_h.summary(1000.0)
    result = {
        "val_mae_meV": h["mae"],
        "val_onsite_mae_meV": h["onsite_mae"],
        "val_hopping_mae_meV": h["hopping_mae"],
    }
    if acc_s.n_onsite + acc_s.n_hopping:
        result["val_s_mae"] = acc_s.summary()["mae"]
    if run.eigen is not None:
        # eigenvalues of the predicted H and S within the window of `gears_h evaluate`;
        # snapshots whose predicted S is not positive definite are counted, not averaged
        eig = np.concatenate(eig_errors) if eig_errors else np.zeros(0)
        if eig.size:
            result["val_eig_mae_meV"] = 1000.0 * float(eig.mean())
        result["val_eig_failed"] = eig_failed
    return result


def train(config: Config, *, resume: bool = False, log: Logger | None = None) -> dict[str, Any]:
    """Run (or resume) training; returns the last epoch's metrics."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = config.run_dir / "config.yaml"
    if resume and cfg_path.is_file():
        saved = Config.model_validate(yaml.safe_load(cfg_path.read_text()))
        # the saved model config carries avg_num_neighbors from the analysis
        same_model = saved.model == replace(
            config.model, avg_num_neighbors=saved.model.avg_num_neighbors
        )
        if not same_model or saved.data != config.data:
            raise RunError(f"{cfg_path}: --resume with a different model or data config")
    run = setup(config)
    _write_text_atomic(
        cfg_path, yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False)
    )
    info_path = run.config.run_dir / RUN_INFO
    info = run_info(run)
    if resume and info_path.is_file():  # keep what the first start measured (the fit's time)
        saved = json.loads(info_path.read_text())
        if "two_centre_fit_s" in saved:
            info["two_centre_fit_s"] = saved["two_centre_fit_s"]
    _write_text_atomic(info_path, json.dumps(info, indent=2) + "\n")
    tcfg = run.config.training
    if len(run.train) < tcfg.batch_size:
        raise RunError(
            f"training.batch_size: {tcfg.batch_size} is more than the {len(run.train)} "
            "training structures"
        )
    steps_per_epoch = len(run.train) // tcfg.batch_size  # the remainder is dropped
    tx = make_optimizer(run.config, steps_per_epoch * tcfg.epochs)
    weights = LossWeights(**run.config.loss.model_dump())
    ckpt = RunCheckpoints(
        run.config.run_dir, tcfg.keep_checkpoints, every_s=tcfg.checkpoint_every_s
    )
    state, fit_s = init_state(run, tx, fit=not (resume and ckpt.has_checkpoint()))
    if fit_s is not None:
        info["two_centre_fit_s"] = round(fit_s, 2)
        _write_text_atomic(info_path, json.dumps(info, indent=2) + "\n")
    start_epoch = 1
    wall_before = 0.0
    metrics_path = run.config.run_dir / "metrics.jsonl"
    if resume:
        restored = ckpt.restore_latest(state)
        if restored is not None:
            state, last = restored
            start_epoch = last + 1
            # drop metrics of epochs after the restored checkpoint (they will be redone)
            if metrics_path.is_file():
                keep = [
                    row
                    for row in metrics_path.read_text().splitlines()
                    if row and json.loads(row)["epoch"] <= last
                ]
                _write_text_atomic(metrics_path, "".join(k + "\n" for k in keep))
                if keep:  # wall time (and max_minutes) counts the whole run, across resumes
                    wall_before = float(json.loads(keep[-1]).get("wall_s", 0.0))
    elif metrics_path.exists():
        metrics_path.unlink()
    parallel = DataParallel.create(tcfg.batch_size)
    state = parallel.replicate(state)
    constants = parallel.replicate(run.constants)
    step_fn = make_train_step(run.model, tx, weights, tcfg.ema_decay, run.eigen)
    apply = jax.jit(run.model.apply)
    t_start = time.monotonic() - wall_before
    last_metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, tcfg.epochs + 1):
        t0 = time.monotonic()
        rng = np.random.default_rng([tcfg.seed, epoch])
        order = rng.permutation(len(run.train))
        sums: dict[str, float] = {}
        for b in range(steps_per_epoch):
            chunk = [run.train[k] for k in order[b * tcfg.batch_size : (b + 1) * tcfg.batch_size]]
            batch, targets = make_sharded_batch(
                chunk, parallel.n_shards, run.ladder, run.layout, run.eigen_size
            )
            state, m = step_fn(state, parallel.shard(batch), parallel.shard(targets), constants)
            for k, v in jax.device_get(m).items():
                sums[k] = sums.get(k, 0.0) + float(v)
        train_time = time.monotonic() - t0
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "step": int(state.step),
            "train_time_s": train_time,
            "structures_per_s": len(run.train) / max(train_time, 1e-9),
            "wall_s": time.monotonic() - t_start,
            **{f"train_{k}": v / steps_per_epoch for k, v in sums.items()},
        }
        val = None
        stopping = (
            tcfg.max_minutes is not None and (time.monotonic() - t_start) > 60 * tcfg.max_minutes
        )
        if epoch % tcfg.eval_every == 0 or epoch == tcfg.epochs or stopping:
            val = validate(run, state.ema_params, apply)
            if val:
                metrics.update(val)
        last = stopping or epoch == tcfg.epochs
        ckpt.save(state, epoch, None if not val else float(val["val_mae_meV"]), force=last)
        with metrics_path.open("a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if log is not None:
            log(metrics)
        last_metrics = metrics
        if stopping:  # the last epoch was validated, so `best` saw it
            break
    ckpt.close()
    return last_metrics
