"""Where a model comes from: ``default`` (the bundle committed in this package) or a path.

``gears_h infer MODEL``, ``gears_h evaluate MODEL`` and the service's ``GEARS_H_MODEL`` all
resolve their model through `resolve_bundle_path`. (A training run directory is turned into
a bundle by the training CLI, which owns checkpoints; the core reads bundles only.)
"""

from __future__ import annotations

from pathlib import Path

from gears_h_core.io.bundle import MANIFEST, BundleError

DEFAULT_MODEL = "default"


def default_bundle_path() -> Path:
    """The committed default bundle (trained on the shipped h-BN and butanol data)."""
    return Path(__file__).resolve().parent.parent / "models" / "default"


def resolve_bundle_path(spec: str | Path) -> Path:
    """``"default"`` -> the committed bundle; otherwise ``spec`` must be a bundle directory.

    Raises:
        BundleError: the path does not exist or is not a bundle (no manifest.json).
    """
    if str(spec) == DEFAULT_MODEL:
        path = default_bundle_path()
        if not (path / MANIFEST).is_file():
            raise BundleError(f"{path}: the default model bundle is missing from this install")
        return path
    path = Path(spec)
    if not path.exists():
        raise BundleError(f"{path}: no such model (a bundle directory or 'default')")
    if not (path / MANIFEST).is_file():
        raise BundleError(f"{path}: not a model bundle ({MANIFEST} is missing)")
    return path
