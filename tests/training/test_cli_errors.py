"""The ``gears_h`` CLI on bad input: exit status 2 and exactly one line on stderr (no
traceback) that names what is wrong; and the config template ⇄ validate round trip.
Nothing here compiles a network."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ase import Atoms
from ase.io import write

from training.cli import main
from training.config import Config


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI, expect status 2 and one ``gears_h: ...`` line on stderr; returns it."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gears_h: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def water_file(tmp_path: Path) -> Path:
    path = tmp_path / "water.extxyz"
    write(path, Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
    return path


# -- config files --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "train"])
def test_missing_config_file(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nope.yaml"
    msg = one_line_error(capsys, [command, str(path)])
    assert str(path) in msg and "cannot read" in msg


def test_bad_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("training: {epochs: [1, 2\nmodel: 3\n")
    msg = one_line_error(capsys, ["validate", str(path)])
    assert str(path) in msg and "invalid YAML" in msg


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("training: {epochz: 3}\n", "training.epochz"),
        ("model: {edge_cutof: 3.0}\n", "model.edge_cutof"),
        ("optimizer: {algorithm: {name: adam, weight_decay: 0.1}}\n", "weight_decay"),
        ("surprise: 1\n", "surprise"),
        ("training: {epochs: 0}\n", "training.epochs"),
        ("optimizer: {algorithm: {name: sgd}}\n", "optimizer.algorithm"),
    ],
)
def test_invalid_config_names_the_key(
    text: str, where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    for command in ("validate", "train"):
        msg = one_line_error(capsys, [command, str(path)])
        assert where in msg, msg
        assert not (tmp_path / "runs").exists()  # nothing was started


def test_train_with_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cfg.yaml"
    data = tmp_path / "no-data"
    path.write_text(
        yaml.safe_dump({"run_dir": str(tmp_path / "run"), "data": {"train": [str(data)]}})
    )
    msg = one_line_error(capsys, ["train", str(path)])
    assert str(data) in msg


def test_resume_with_another_model_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    saved = Config.model_validate({"run_dir": str(run)})
    (run / "config.yaml").write_text(yaml.safe_dump(saved.model_dump(mode="json")))
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"run_dir": str(run), "model": {"n_interactions": 3}}))
    msg = one_line_error(capsys, ["train", str(path), "--resume"])
    assert "--resume with a different model or data config" in msg


# -- template and validate -----------------------------------------------------------------------


@pytest.mark.parametrize("full", [False, True])
def test_template_validates_to_the_defaults(
    full: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cfg.yaml"
    assert main(["template", "train", "-o", str(out), *(["--full"] if full else [])]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    text = out.read_text()
    assert text.lstrip().startswith("#")  # annotated
    assert Config.model_validate(yaml.safe_load(text)) == Config()  # cannot drift from models
    assert main(["validate", str(out)]) == 0
    resolved = capsys.readouterr().out
    config = Config.model_validate(yaml.safe_load(resolved))
    assert config == Config()
    # the resolved dump is a fixed point of validate
    again = tmp_path / "resolved.yaml"
    again.write_text(resolved)
    assert main(["validate", str(again)]) == 0
    assert capsys.readouterr().out == resolved


def test_full_template_lists_every_field(tmp_path: Path) -> None:
    short, full = tmp_path / "short.yaml", tmp_path / "full.yaml"
    assert main(["template", "train", "-o", str(short)]) == 0
    assert main(["template", "train", "--full", "-o", str(full)]) == 0

    def keys(tree: object, prefix: str = "") -> set[str]:
        if not isinstance(tree, dict):
            return set()
        out = set()
        for k, v in tree.items():
            out |= {f"{prefix}{k}"} | keys(v, f"{prefix}{k}.")
        return out

    full_keys = keys(yaml.safe_load(full.read_text()))
    assert full_keys == keys(Config().model_dump(mode="json"))
    assert keys(yaml.safe_load(short.read_text())) < full_keys


def test_template_does_not_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cfg.yaml"
    out.write_text("mine\n")
    msg = one_line_error(capsys, ["template", "train", "-o", str(out)])
    assert "exists" in msg and "--force" in msg
    assert out.read_text() == "mine\n"
    assert main(["template", "train", "-o", str(out), "--force"]) == 0
    assert out.read_text() != "mine\n"


@pytest.mark.parametrize(
    "command", ["template", "validate", "analyze", "train", "export", "infer", "evaluate"]
)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert f"gears_h {command}" in capsys.readouterr().out


# -- models and structures -------------------------------------------------------------------------


def test_infer_with_missing_structure_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent.extxyz"
    msg = one_line_error(capsys, ["infer", str(tmp_path), str(missing)])
    assert str(missing) in msg and "no such file" in msg


def test_infer_with_unreadable_structure_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.extxyz"
    junk.write_text("not\na structure\n")
    msg = one_line_error(capsys, ["infer", str(tmp_path), str(junk)])
    assert str(junk) in msg


def test_infer_with_a_folder_that_is_not_a_bundle(
    tmp_path: Path, water_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    msg = one_line_error(capsys, ["infer", str(folder), str(water_file)])
    assert str(folder) in msg and "not a model bundle" in msg
    msg = one_line_error(capsys, ["infer", str(tmp_path / "nothing"), str(water_file)])
    assert "no such model" in msg


def test_export_of_a_folder_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    msg = one_line_error(capsys, ["export", str(tmp_path)])
    assert str(tmp_path) in msg and "not a run directory" in msg
    assert not (tmp_path / "bundle").exists()
    # a config alone (no analysis, no checkpoints) is not a run either
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"run_dir": str(tmp_path)}))
    msg = one_line_error(capsys, ["export", str(tmp_path)])
    assert "analysis.json" in msg


def test_evaluate_with_missing_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    msg = one_line_error(capsys, ["evaluate", str(tmp_path), str(tmp_path / "no-data")])
    assert "no-data" in msg


def test_analyze_with_missing_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    msg = one_line_error(capsys, ["analyze", str(tmp_path / "none"), "--output-dir", str(tmp_path)])
    assert "none" in msg
