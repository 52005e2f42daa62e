"""Orbax checkpoints of a run: ``checkpoints/latest`` (last N epochs) and ``checkpoints/best``.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save resumes from the previous complete checkpoint. Saves are synchronous here so
that a checkpoint that has been reported is really on disk.

A save costs seconds of orbax bookkeeping on a CPU, comparable to an epoch of a small data
set, so ``best`` is written only when the validation error improves and ``latest`` at most
every ``every_s`` seconds (and whenever asked with ``force``, e.g. at the last epoch). A run
killed in between resumes from an earlier epoch and redoes the rest identically.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from training.state import TrainState


class RunCheckpoints:
    def __init__(
        self, run_dir: Path, keep: int, *, create: bool = True, every_s: float = 0.0
    ) -> None:
        self.every_s = float(every_s)
        self._last_save = -math.inf
        root = (run_dir / "checkpoints").absolute()
        if not create and not root.is_dir():
            raise FileNotFoundError(f"{run_dir}: the run has no checkpoints yet")
        self.latest = ocp.CheckpointManager(
            root / "latest",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=False, create=create
            ),
        )
        self.best = ocp.CheckpointManager(
            root / "best",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda m: m["val_mae"],
                best_mode="min",
                enable_async_checkpointing=False,
                create=create,
            ),
        )

    @staticmethod
    def _item(state: TrainState, epoch: int) -> dict[str, Any]:
        return {"state": state, "epoch": np.asarray(epoch, np.int64)}

    def save(
        self, state: TrainState, epoch: int, val_mae: float | None, *, force: bool = False
    ) -> None:
        """Write ``latest`` if ``force`` or ``every_s`` has passed since the last write, and
        ``best`` if ``val_mae`` beats every validation so far (``latest`` then too, so that
        ``latest`` is never older than ``best``)."""
        item = self._item(state, epoch)
        improved = val_mae is not None and val_mae < self._best_so_far()
        now = time.monotonic()
        if force or improved or now - self._last_save >= self.every_s:
            self.latest.save(epoch, args=ocp.args.StandardSave(item), force=True)
            self._last_save = now
        if improved:
            self.best.save(
                epoch, args=ocp.args.StandardSave(item), metrics={"val_mae": val_mae}, force=True
            )

    def _best_so_far(self) -> float:
        step = self.best.best_step()
        if step is None:
            return math.inf
        metrics = self.best.metrics(step)
        return math.inf if not metrics else float(metrics["val_mae"])

    def has_checkpoint(self) -> bool:
        return self.latest.latest_step() is not None

    def restore_latest(self, template: TrainState) -> tuple[TrainState, int] | None:
        step = self.latest.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self._item(template, 0))
        item = self.latest.restore(step, args=ocp.args.StandardRestore(abstract))
        return item["state"], int(item["epoch"])

    def restore(self, template: Any, *, which: str = "best") -> tuple[TrainState, int]:
        """The ``best`` (falls back to latest when nothing was validated) or ``latest``
        checkpoint as ``(state, epoch)``; ``template`` may be abstract (ShapeDtypeStruct)."""
        if which not in ("best", "latest"):
            raise ValueError(f"checkpoint: expected 'best' or 'latest', got {which!r}")
        manager, step = self.latest, self.latest.latest_step()
        if which == "best" and self.best.best_step() is not None:
            manager, step = self.best, self.best.best_step()
        if step is None:
            raise FileNotFoundError("the run has no checkpoint yet")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self._item(template, 0))
        item = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return item["state"], int(item["epoch"])

    def close(self) -> None:
        self.latest.close()
        self.best.close()
