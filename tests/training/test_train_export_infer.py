"""End to end through the ``gears_h`` CLI (in-process): train a tiny model on two butanol
snapshots, export the bundle, ``infer`` to every output kind, ``evaluate`` — and resume a run
killed with SIGKILL.

One run is trained per module (compiling dominates; the JAX persistent cache makes the later,
identical programs — the resumed runs, the predictors — load instead of compile; set
``GEARS_H_TEST_JAX_CACHE`` to keep that cache between sessions). Properties:
every output kind reads back into the predicted blocks bit for bit; evaluate scores a model's
own predictions as exact and agrees with training's validation and with a hand count; the
bundle carries its provenance and is refused once modified; a resumed run reproduces the
metrics of the uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.io import read, write

from gears_h_core.assemble.sparse import to_csr_per_shift
from gears_h_core.io.bundle import MANIFEST, PARAMS, BundleError, load_bundle
from gears_h_core.io.exporters import read_csr_npz
from gears_h_core.io.structures import read_structure_files
from gears_h_core.io.wire import decode_response
from gears_h_core.predict import Predictor
from gears_h_core.testing import (
    assert_block_matrices_close,
    hopping_blocks,
    onsite_blocks,
    tiny_model_config,
)
from gears_h_core.types import BlockMatrix, SparseHamiltonian
from training.cli import main
from training.config import Config
from training.data.snapshot import LabeledStructure, read_dataset, read_snapshot
from training.run import train

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 4  # every run here has the same optimizer schedule, hence the same compiled step
N_TRAIN = 2
VALID = ("butanol_100", "butanol_101")  # inferred / evaluated; the first is the validation set


def config_dict(data: Path, run_dir: Path, avg_num_neighbors: float | None = None) -> dict:
    model = tiny_model_config().to_dict()
    if avg_num_neighbors is not None:
        model["avg_num_neighbors"] = avg_num_neighbors
    return {
        "run_dir": str(run_dir),
        "name": "tiny-butanol",
        "data": {
            "train": [str(data / "train")],
            "valid": [str(data / "valid" / VALID[0])],
            "n_train": N_TRAIN,
        },
        "model": model,
        "optimizer": {"warmup_steps": 1},
        "training": {"epochs": EPOCHS, "batch_size": 1, "seed": 0, "checkpoint_every_s": 0},
    }


@dataclass(frozen=True)
class Workflow:
    data: Path  # butanol data set
    root: Path
    run: Path
    bundle: Path
    structures: Path  # two frames: the atoms.extxyz of the VALID snapshots, verbatim
    avg_num_neighbors: float  # what the analysis of the training data sets


def run_cli(capsys: pytest.CaptureFixture[str], argv: Sequence[str]) -> tuple[str, str]:
    """Run the CLI in-process, expect status 0; returns (stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


@pytest.fixture(scope="module")
def workflow(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory, jax_compile_cache: Path
) -> Workflow:
    data = shared_data / "butanol_pbe_def2svp"
    root = tmp_path_factory.mktemp("workflow")
    run = root / "run"
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(data, run)))
    assert main(["train", str(cfg)]) == 0
    bundle = root / "bundle"
    assert main(["export", str(run), "-o", str(bundle), "--max-atoms", "32"]) == 0
    structures = root / "two.extxyz"
    structures.write_text(
        "".join((data / "valid" / name / "atoms.extxyz").read_text() for name in VALID)
    )
    avg = json.loads((run / "analysis.json").read_text())["avg_num_neighbors"]
    return Workflow(data, root, run, bundle, structures, float(avg))


@pytest.fixture(scope="module")
def predictions(workflow: Workflow) -> list[SparseHamiltonian]:
    """The bundle's predictions for the two structures, one at a time (as the CLI does)."""
    predictor = Predictor(load_bundle(workflow.bundle))
    return [predictor.predict([s])[0] for s in read_structure_files([workflow.structures])]


@pytest.fixture(scope="module")
def labeled(workflow: Workflow) -> list[LabeledStructure]:
    return read_dataset(workflow.data / "valid", limit=len(VALID))


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]


def assert_same_blocks(a: BlockMatrix, b: BlockMatrix, name: str) -> None:
    assert_block_matrices_close(a, b, rtol=0.0, name=name)  # same rows, identical values


def assert_same_prediction(a: SparseHamiltonian, b: SparseHamiltonian) -> None:
    np.testing.assert_array_equal(a.structure.numbers, b.structure.numbers)
    np.testing.assert_allclose(a.structure.positions, b.structure.positions, rtol=0, atol=1e-7)
    assert_same_blocks(a.H, b.H, "H")
    assert a.S is not None and b.S is not None
    assert_same_blocks(a.S, b.S, "S")


def one_line_error(capsys: pytest.CaptureFixture[str], argv: Sequence[str]) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gears_h: "), err
    assert "Traceback" not in err
    return lines[0]


# -- the run and its bundle ----------------------------------------------------------------------


def test_run_directory_and_metrics(workflow: Workflow) -> None:
    rows = metrics(workflow.run)
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    assert [r["step"] for r in rows] == [N_TRAIN * e for e in range(1, EPOCHS + 1)]
    for r in rows:
        assert np.isfinite(r["train_loss"]) and r["val_mae_meV"] > 0
        assert r["train_loss"] == pytest.approx(
            r["train_onsite_h"] + r["train_hopping_h"] + 100.0 * r["train_hopping_s"], rel=1e-5
        )
    saved = Config.model_validate(yaml.safe_load((workflow.run / "config.yaml").read_text()))
    assert saved.model.avg_num_neighbors == workflow.avg_num_neighbors  # set by the analysis
    # the least-squares two-centre fit ran before the first step, and its time is recorded
    info = json.loads((workflow.run / "run_info.json").read_text())
    assert saved.model.two_centre_basis > 0 and 0 <= info["two_centre_fit_s"] < 60


def test_bundle_manifest_carries_provenance(workflow: Workflow) -> None:
    manifest = json.loads((workflow.bundle / MANIFEST).read_text())
    meta = manifest["metadata"]
    train = read_dataset(workflow.data / "train", limit=N_TRAIN)
    expected_fp = hashlib.sha256("".join(sorted(s.fingerprint for s in train)).encode())
    assert meta["training_data_fingerprint"] == expected_fp.hexdigest()
    assert meta["n_train"] == N_TRAIN
    assert meta["checkpoint"] == "best"
    rows = metrics(workflow.run)
    best = min(rows, key=lambda r: r["val_mae_meV"])
    assert meta["epoch"] == best["epoch"]
    assert meta["step"] == best["step"]
    assert meta["validation"] == {
        k: v for k, v in best.items() if k.startswith("val_") or k == "epoch"
    }
    assert manifest["name"] == "tiny-butanol"
    assert manifest["species"] == [1, 6, 8]
    assert manifest["ladder"]["max_atoms"] == 32
    assert manifest["model_config"]["avg_num_neighbors"] == workflow.avg_num_neighbors


def test_export_options(workflow: Workflow, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run_cli(capsys, ["export", str(workflow.run), "--checkpoint", "latest", "--name", "x"])
    default = workflow.run / "bundle"
    assert out.strip() == f"wrote {default}"
    manifest = json.loads((default / MANIFEST).read_text())
    assert manifest["name"] == "x"
    assert manifest["metadata"]["checkpoint"] == "latest"
    assert manifest["metadata"]["epoch"] == EPOCHS
    assert manifest["metadata"]["validation"]["epoch"] == EPOCHS
    load_bundle(default)  # complete and consistent
    shutil.rmtree(default)


def test_tampered_bundle_is_refused(
    workflow: Workflow, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(workflow.bundle, bundle)
    params = bytearray((bundle / PARAMS).read_bytes())
    params[len(params) // 2] ^= 0x01
    (bundle / PARAMS).write_bytes(bytes(params))
    with pytest.raises(BundleError, match=r"params\.msgpack: sha256 mismatch"):
        load_bundle(bundle)
    for argv in (
        ["infer", str(bundle), str(workflow.structures)],
        ["evaluate", str(bundle), str(workflow.data / "valid"), "1", "--json"],
    ):
        msg = one_line_error(capsys, argv)
        assert "params.msgpack" in msg and "sha256 mismatch" in msg
    (bundle / PARAMS).unlink()
    assert "partial bundle" in one_line_error(
        capsys, ["infer", str(bundle), str(workflow.structures)]
    )


# -- infer: every output kind reads back into the predictions -------------------------------------


def test_infer_msgpack_decodes_to_the_predictions(
    workflow: Workflow,
    predictions: list[SparseHamiltonian],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "pred.msgpack"
    stdout, stderr = run_cli(
        capsys, ["infer", str(workflow.bundle), str(workflow.structures), "-o", str(out)]
    )
    assert stdout == ""  # the report goes to stderr
    assert f"wrote {out}" in stderr
    decoded = decode_response(out.read_bytes())
    bundle = load_bundle(workflow.bundle)
    assert len(decoded) == len(predictions)
    for res, pred in zip(decoded, predictions, strict=True):
        assert (res.model.name, res.model.sha256) == ("tiny-butanol", bundle.sha256)
        assert res.timing is None
        assert_same_prediction(pred, res.hamiltonian)


def test_infer_keeps_compiled_networks_in_the_cache_dir(
    workflow: Workflow,
    predictions: list[SparseHamiltonian],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A second `infer` with the same --cache-dir loads the traced networks instead of
    tracing them again and predicts the same; --no-cache writes nothing."""
    import jax

    cache = tmp_path / "cache"
    previous = jax.config.jax_compilation_cache_dir
    caplog.set_level("INFO", logger="gears_h_core.predict")
    try:
        base = ["infer", str(workflow.bundle), str(workflow.structures), "--cache-dir", str(cache)]
        run_cli(capsys, [*base, "-o", str(tmp_path / "first.msgpack")])
        assert "traced networks loaded from disk: 0" in caplog.text
        entries = sorted((cache / "traced").glob("*.jaxexport"))
        assert entries and (cache / "xla").is_dir()
        caplog.clear()
        run_cli(capsys, [*base, "-o", str(tmp_path / "second.msgpack")])
        assert "traced networks loaded from disk: 0" not in caplog.text
        assert "traced networks loaded from disk: 1" in caplog.text
        assert sorted((cache / "traced").glob("*.jaxexport")) == entries
        for name in ("first", "second"):
            decoded = decode_response((tmp_path / f"{name}.msgpack").read_bytes())
            for res, pred in zip(decoded, predictions, strict=True):
                assert_same_prediction(pred, res.hamiltonian)
        other = tmp_path / "other"
        run_cli(capsys, [*base[:3], "--cache-dir", str(other), "--no-cache"])
        assert not other.exists()
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)


def test_infer_snapshot_folders_read_back_bit_exact(
    workflow: Workflow,
    predictions: list[SparseHamiltonian],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "pred"
    run_cli(capsys, ["infer", str(workflow.bundle), str(workflow.structures), "-o", str(out)])
    folders = sorted(p for p in out.iterdir())
    assert [p.name for p in folders] == ["structure_0000", "structure_0001"]
    for folder, pred in zip(folders, predictions, strict=True):
        back = read_snapshot(folder)
        assert_same_prediction(pred, back.hamiltonian)
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["model"]["sha256"] == load_bundle(workflow.bundle).sha256


def test_infer_csr_npz_equals_to_csr_per_shift(
    workflow: Workflow,
    predictions: list[SparseHamiltonian],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_cli(
        capsys,
        ["infer", str(workflow.bundle), str(workflow.structures), "-o", str(tmp_path / "h.npz")],
    )
    paths = [tmp_path / "h_0000.npz", tmp_path / "h_0001.npz"]
    for path, pred in zip(paths, predictions, strict=True):
        back = read_csr_npz(path)
        for name, bm in (("H", pred.H), ("S", pred.S)):
            assert bm is not None
            expected = to_csr_per_shift(bm, pred.basis, pred.structure.numbers)
            assert set(back[name]) == set(expected) == {(0, 0, 0)}
            for shift, m in expected.items():
                assert (back[name][shift] != m).nnz == 0


def test_infer_from_a_run_directory_uses_the_best_checkpoint(
    workflow: Workflow,
    predictions: list[SparseHamiltonian],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "pred.msgpack"
    run_cli(
        capsys,
        ["infer", str(workflow.run), str(workflow.structures), "-o", str(out), "--no-overlap"],
    )
    decoded = decode_response(out.read_bytes())
    for res, pred in zip(decoded, predictions, strict=True):
        assert res.S is None
        assert_same_blocks(pred.H, res.H, "H")
    assert not (workflow.run / "bundle").exists()  # exported to a temporary folder only


# -- evaluate --------------------------------------------------------------------------------------


def evaluate_json(capsys: pytest.CaptureFixture[str], argv: Sequence[str]) -> dict[str, Any]:
    out, _ = run_cli(capsys, ["evaluate", *argv, "--json"])
    doc = json.loads(out)  # the whole of stdout is one JSON object
    assert isinstance(doc, dict)
    assert set(doc) >= {"n_structures", "H", "S", "eigenvalues", "per_species_pair"}
    assert set(doc["H"]) == {"mae_meV", "rmse_meV", "max_meV", "onsite_mae_meV", "hopping_mae_meV"}
    assert doc["S"] is None or set(doc["S"]) == {"mae", "max"}
    return doc


def test_evaluate_own_predictions_is_exact(
    workflow: Workflow, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The folder of the model's own predictions as a data set: every stored row is matched
    to its prediction (positions went through extended XYZ text: ~1e-8 Å)."""
    folder = tmp_path / "pred"
    run_cli(capsys, ["infer", str(workflow.bundle), str(workflow.structures), "-o", str(folder)])
    doc = evaluate_json(capsys, [str(workflow.bundle), str(folder)])
    assert doc["n_structures"] == 2
    assert doc["H"]["max_meV"] < 1e-3  # 1 µeV; a mismatched row would be ~100 meV
    assert doc["S"]["max"] < 1e-6
    assert doc["model"]["sha256"] == load_bundle(workflow.bundle).sha256


def hand_mae_meV(pairs: Sequence[tuple[SparseHamiltonian, LabeledStructure]]) -> float:
    abs_sum, count = 0.0, 0
    for pred, ref in pairs:
        p_on, r_on = onsite_blocks(pred.H), onsite_blocks(ref.hamiltonian.H)
        p_hop, r_hop = hopping_blocks(pred.H), hopping_blocks(ref.hamiltonian.H)
        for table_p, table_r in ((p_on, r_on), (p_hop, r_hop)):
            for key, block in table_r.items():
                p = table_p.get(key, np.zeros_like(block)).astype(np.float64)
                abs_sum += float(np.abs(p - block.astype(np.float64)).sum())
                count += block.size
    return 1000.0 * abs_sum / count


def test_evaluate_matches_a_hand_count_and_training_validation(
    workflow: Workflow,
    predictions: list[SparseHamiltonian],
    labeled: list[LabeledStructure],
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = evaluate_json(capsys, [str(workflow.bundle), str(workflow.data / "valid"), "2"])
    assert doc["n_structures"] == 2
    assert doc["H"]["mae_meV"] == pytest.approx(
        hand_mae_meV(list(zip(predictions, labeled, strict=True))), rel=1e-9
    )
    assert doc["H"]["mae_meV"] > 1.0  # a two-snapshot model is far from exact
    assert {k.split()[0] for k in doc["per_species_pair"]} == {
        "1-1",
        "1-6",
        "1-8",
        "6-6",
        "6-8",
        "8-8",
    }
    # the validation snapshot alone: the MAE training logged for the exported epoch
    doc = evaluate_json(capsys, [str(workflow.bundle), str(workflow.data / "valid" / VALID[0])])
    manifest = json.loads((workflow.bundle / MANIFEST).read_text())
    val = manifest["metadata"]["validation"]
    assert doc["H"]["mae_meV"] == pytest.approx(val["val_mae_meV"], rel=1e-4)
    assert doc["H"]["onsite_mae_meV"] == pytest.approx(val["val_onsite_mae_meV"], rel=1e-4)
    assert doc["H"]["hopping_mae_meV"] == pytest.approx(val["val_hopping_mae_meV"], rel=1e-4)
    assert doc["S"]["mae"] == pytest.approx(val["val_s_mae"], rel=1e-4)


# -- errors that need a model ------------------------------------------------------------------


def test_infer_with_an_element_the_model_does_not_know(
    workflow: Workflow, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    atoms = read(workflow.structures, index=0)
    assert isinstance(atoms, Atoms)
    atoms += Atoms("Si", positions=[atoms.positions.max(axis=0) + 5.0])
    path = tmp_path / "with_si.extxyz"
    write(path, [read(workflow.structures, index=1), atoms])
    out = tmp_path / "pred.msgpack"
    msg = one_line_error(capsys, ["infer", str(workflow.bundle), str(path), "-o", str(out)])
    assert "atom 15" in msg and "14" in msg and "tiny-butanol" in msg, msg
    assert not out.exists()  # nothing written for the good first frame either


def test_evaluate_on_a_data_set_with_unknown_species(
    workflow: Workflow, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hbn = shared_data / "hbn_pbe_dzp" / "valid"
    msg = one_line_error(capsys, ["evaluate", str(workflow.bundle), str(hbn), "1", "--json"])
    assert str(hbn) in msg and "element 5" in msg, msg
    assert capsys.readouterr().out == ""


# -- resume ----------------------------------------------------------------------------------------

COMPARED = (
    "step",
    "train_loss",
    "train_onsite_h",
    "train_hopping_h",
    "train_hopping_s",
    "train_grad_norm",
    "val_mae_meV",
    "val_onsite_mae_meV",
    "val_hopping_mae_meV",
    "val_s_mae",
)


def assert_same_metrics(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
    for g, w in zip(got, want, strict=True):
        for key in COMPARED:
            assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-7), (g["epoch"], key)


def test_resume_reproduces_the_metrics(workflow: Workflow, tmp_path: Path) -> None:
    """The run as if killed while checkpointing its last epoch, resumed in-process: rows of
    epochs after the restored checkpoint are dropped and redone (a bogus row stands for one),
    and the redone epoch reproduces the uninterrupted run (shuffling, optimizer state, EMA and
    step count all restored). The SIGKILL test below does it for real (slow)."""
    run = tmp_path / "run"
    shutil.copytree(workflow.run, run, ignore=shutil.ignore_patterns("bundle"))
    # killed while writing the last "latest" checkpoint: neither it nor "best" (saved after
    # it) holds the last epoch
    for kind in ("latest", "best"):
        shutil.rmtree(run / "checkpoints" / kind / str(EPOCHS), ignore_errors=True)
    assert (run / "checkpoints" / "latest" / str(EPOCHS - 1)).is_dir()
    rows = metrics(workflow.run)
    bogus = dict(rows[-1], train_loss=-1.0, val_mae_meV=-1.0)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows[:-1], bogus]))
    config = Config.model_validate(config_dict(workflow.data, run, workflow.avg_num_neighbors))
    last = train(config, resume=True)
    assert last["epoch"] == EPOCHS
    assert_same_metrics(metrics(run), rows)


def test_resume_with_the_original_config_file(
    workflow: Workflow, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``gears_h train CONFIG --resume`` with the very config file the run was started with
    (a finished run here, so nothing is left to train once resuming is accepted)."""
    run = tmp_path / "run"
    shutil.copytree(workflow.run, run, ignore=shutil.ignore_patterns("bundle"))
    saved = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(saved.replace(str(workflow.run), str(run)))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(workflow.data, run)))  # as the user wrote it
    assert main(["train", str(cfg), "--resume"]) == 0, capsys.readouterr().err
    assert len(metrics(run)) == EPOCHS


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_metrics(
    workflow: Workflow, tmp_path: Path, jax_compile_cache: Path
) -> None:
    """``gears_h train`` killed with SIGKILL once its first epoch is logged, then resumed:
    the metrics of every epoch equal those of the uninterrupted run."""
    run = tmp_path / "run"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(workflow.data, run, workflow.avg_num_neighbors)))
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(jax_compile_cache))
    log = tmp_path / "train.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "training.cli", "train", str(cfg)],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 400
        while proc.poll() is None and time.monotonic() < deadline:
            if (run / "metrics.jsonl").is_file() and len(metrics(run)) >= 1:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"train ended before the kill:\n{log.read_text()[-3000:]}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = len(metrics(run))
    assert 1 <= done < EPOCHS
    last = train(Config.model_validate(yaml.safe_load(cfg.read_text())), resume=True)
    assert last["epoch"] == EPOCHS
    assert_same_metrics(metrics(run), metrics(workflow.run))
