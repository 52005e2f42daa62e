"""Shared pytest configuration: where the shipped data live, and tiny helpers."""

from __future__ import annotations

import os

# BLAS threads oversubscribe the 2-core CI machine when pytest and XLA run side by side.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GEARS_H_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Read-only DFT data sets (../shared/data); tests never write there."""
    if not DATA.is_dir():
        pytest.skip(f"shipped data not found at {DATA}")
    return DATA
