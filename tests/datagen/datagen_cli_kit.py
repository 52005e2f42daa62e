"""Asserts shared by the datagen CLI tests: one-line errors and nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.cli import main


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``gears_h argv``: exit status 2 and exactly one ``gears_h: ...`` line on stderr."""
    assert main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("gears_h: ")]
    assert len(lines) == 1, lines
    return lines[0]


def nothing_written(out: Path, *, allowed: tuple[str, ...] = ()) -> None:
    """No snapshot folder and no temporary folder under ``out`` (names in ``allowed`` may be
    there, e.g. GPAW's ``.logs``)."""
    if out.exists():
        assert [p.name for p in out.iterdir() if p.name not in allowed] == []
