"""Optional third-party tools in tests: skip locally when missing, fail in CI.

The default install (`uv run pytest`) stays light; `.ci/run` installs the `[dft]` extra and
the `deploy` and `interop` groups and sets ``GEARS_H_REQUIRE_OPTIONAL=1``, so there a missing
tool is an error rather than a silent skip.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest

INSTALL_HINT = "uv sync --extra dft --group deploy --group interop"


def _required() -> bool:
    return os.environ.get("GEARS_H_REQUIRE_OPTIONAL", "") not in ("", "0")


def _missing(what: str) -> None:
    msg = f"{what} is not installed (install with: {INSTALL_HINT})"
    if _required():
        pytest.fail(msg + "; GEARS_H_REQUIRE_OPTIONAL is set", pytrace=False)
    pytest.skip(msg)


def require_module(name: str) -> ModuleType:
    """Import ``name`` or skip (fail under GEARS_H_REQUIRE_OPTIONAL)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"python module {name!r}")
        raise  # unreachable: skip/fail raise


def require_executable(name: str) -> str:
    """Path of executable ``name`` (venv bin first) or skip (fail under GEARS_H_REQUIRE_OPTIONAL)."""
    import sys
    from pathlib import Path

    venv_bin = Path(sys.executable).parent
    path = shutil.which(name, path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        _missing(f"executable {name!r}")
        raise AssertionError("unreachable")
    return path
