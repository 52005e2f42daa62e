"""Run directory -> model bundle (SPEC §6): the only hand-off from training to serving.

A run directory holds ``config.yaml`` (resolved), ``analysis.json``, ``run_info.json``,
``metrics.jsonl`` and orbax checkpoints. The bundle takes the EMA parameters of the best
checkpoint (lowest validation MAE; the latest one when the run has no validation set), the
model config, basis, species, per-species-pair cutoffs and scale/shift from the analysis, a
serving bucket ladder sized from the training graphs' densities, and provenance: the training
data fingerprint and the validation metrics of the exported epoch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jax
import yaml

from gears_h_core.graph.padding import BucketLadder
from gears_h_core.io.bundle import ModelBundle, save_bundle
from gears_h_core.model.hamiltonian import HamiltonianModel, ModelConstants
from gears_h_core.model.layout import OutputLayout
from gears_h_core.predict import batch_spec, params_to_flat
from training.analysis import Analysis
from training.checkpoints import RunCheckpoints
from training.config import Config
from training.run import RUN_INFO, RunError, make_optimizer, run_info, setup
from training.state import TrainState

#: serving ladder: smallest level, growth ratio and structures per batch
SERVING_MIN_ATOMS = 16
SERVING_RATIO = 2.0
SERVING_MAX_GRAPHS = 32
#: head-room over the densest training graph (edges and pairs per atom)
DENSITY_MARGIN = 1.25


#: training graphs with at most this share of the densest pairs per atom get a sparse tier
SPARSE_TIER_SHARE = 1 / 3


def sparse_tier(info: dict[str, Any]) -> tuple[tuple[float, float], ...]:
    """A sparser bucket tier for the training graphs whose pairs per atom are at most a third
    of the densest's (molecules beside crystals: butanol 14 vs h-BN 82 pairs per atom), sized
    like the dense tier (their largest edges and pairs per atom, plus the margin); none when
    there are no such graphs or the run predates ``graph_densities``. One tier at most: every
    tier adds one compilation per ladder level to the service's warm-up."""
    densities = [(float(e), float(p)) for e, p in info.get("graph_densities", [])]
    sparse = [d for d in densities if d[1] <= SPARSE_TIER_SHARE * float(info["pairs_per_atom"])]
    if not sparse:
        return ()
    return (
        (
            math.ceil(max(e for e, _ in sparse) * DENSITY_MARGIN),
            math.ceil(max(p for _, p in sparse) * DENSITY_MARGIN),
        ),
    )


def serving_ladder(info: dict[str, Any], max_atoms: int) -> BucketLadder:
    return BucketLadder(
        min(SERVING_MIN_ATOMS, max_atoms),
        max_atoms,
        SERVING_RATIO,
        edges_per_atom=math.ceil(float(info["edges_per_atom"]) * DENSITY_MARGIN),
        pairs_per_atom=math.ceil(float(info["pairs_per_atom"]) * DENSITY_MARGIN),
        max_graphs=SERVING_MAX_GRAPHS,
        sparse_tiers=sparse_tier(info),
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise RunError(f"{path}: cannot read ({exc.strerror}); is this a run directory?") from exc
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: invalid JSON ({exc.msg})") from exc


def _metrics_at(run_dir: Path, epoch: int) -> dict[str, Any]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if row.get("epoch") == epoch:
                return {k: v for k, v in row.items() if k.startswith("val_") or k == "epoch"}
    return {}


def export_run(
    run_dir: Path,
    output: Path,
    *,
    checkpoint: str = "best",
    max_atoms: int = 512,
    name: str | None = None,
) -> Path:
    """Write the bundle of ``run_dir`` to ``output`` (atomically); returns ``output``."""
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise RunError(f"{run_dir}: not a run directory (config.yaml is missing)")
    config = Config.model_validate(yaml.safe_load(cfg_path.read_text()))
    analysis = Analysis.from_json(_read_json(run_dir / "analysis.json"))
    if analysis.statistics is None:
        raise RunError(f"{run_dir / 'analysis.json'}: has no scale/shift statistics")
    info_path = run_dir / RUN_INFO
    info = _read_json(info_path) if info_path.is_file() else run_info(setup(config))

    layout = OutputLayout.create(analysis.basis, analysis.species)
    model = HamiltonianModel(
        config.model, layout.n_species, layout.onsite_irreps, layout.hopping_irreps
    )
    constants = ModelConstants.create(layout, analysis.statistics)
    ladder = serving_ladder(info, max_atoms)
    # the state's structure only (traced, not compiled); orbax restores into it
    tx = make_optimizer(config, config.optimizer.warmup_steps + 2)
    abstract = jax.eval_shape(
        lambda batch, consts: TrainState.create(
            model.init(jax.random.PRNGKey(0), batch, consts), tx
        ),
        batch_spec(ladder.buckets[0]),
        constants,
    )
    ckpt = RunCheckpoints(run_dir.resolve(), config.training.keep_checkpoints, create=False)
    try:
        state, epoch = ckpt.restore(abstract, which=checkpoint)
    finally:
        ckpt.close()
    metadata = {
        "run_dir": str(run_dir),
        "checkpoint": checkpoint,
        "epoch": epoch,
        "step": int(state.step),
        "training_data_fingerprint": info["training_data_fingerprint"],
        "train_sets": info.get("train_sets", []),
        "valid_sets": info.get("valid_sets", []),
        "n_train": info.get("n_train"),
        "validation": _metrics_at(run_dir, epoch),
        "training_config": config.model_dump(mode="json"),
    }
    bundle = ModelBundle(
        name=name or config.name,
        config=config.model,
        basis=layout.basis,
        species=layout.species,
        pair_cutoff=dict(analysis.pair_cutoff),
        params=params_to_flat(state.ema_params),
        statistics=analysis.statistics.to_numpy(),
        ladder=ladder.to_dict(),
        metadata=metadata,
    )
    return save_bundle(bundle, output)


CACHE_ENV = "GEARS_H_CACHE_DIR"


def default_cache_dir() -> Path | None:
    """Where the CLI keeps compiled networks: ``$GEARS_H_CACHE_DIR`` (``off`` or empty: no
    cache), else ``$XDG_CACHE_HOME/gears_h`` (``~/.cache/gears_h``)."""
    import os

    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "none") else Path(value)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "gears_h"


def load_predictor(
    spec: str, tmp_dir: Path, cache_dir: Path | None = None
):  # -> gears_h_core.predict.Predictor
    """The `Predictor` of a MODEL argument: a bundle directory, ``default`` (the bundle
    shipped in the package) or a training run directory (exported from its best checkpoint
    into ``tmp_dir`` first).

    With ``cache_dir``, compiled networks persist there between runs, as in the service:
    XLA executables in JAX's persistent compilation cache (``cache_dir/xla``) and traced
    networks in an `ExportCache` (``cache_dir/traced``), so a later command with the same
    model and padding buckets neither traces nor compiles. An unusable directory (read-only,
    say) only costs the cache.
    """
    from gears_h_core.export_cache import ExportCache
    from gears_h_core.io.bundle import load_bundle
    from gears_h_core.io.model_source import resolve_bundle_path
    from gears_h_core.predict import Predictor

    path = Path(spec)
    if spec != "default" and (path / "config.yaml").is_file() and (path / "checkpoints").is_dir():
        bundle_path = export_run(path, tmp_dir / "bundle")
    else:
        bundle_path = resolve_bundle_path(spec)
    export_cache = None
    if cache_dir is not None:
        try:
            (cache_dir / "xla").mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # no cache: every command compiles
        else:
            jax.config.update("jax_compilation_cache_dir", str(cache_dir / "xla"))
            export_cache = ExportCache(cache_dir / "traced")
    return Predictor(load_bundle(bundle_path), export_cache=export_cache)
