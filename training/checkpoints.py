"""Orbax checkpoints of a run: ``checkpoints/latest`` (last N epochs) and ``checkpoints/best``.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save resumes from the previous complete checkpoint. Saves are synchronous here so
that a checkpoint that has been reported is really on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from training.state import TrainState


class RunCheckpoints:
    def __init__(self, run_dir: Path, keep: int) -> None:
        root = (run_dir / "checkpoints").absolute()
        self.latest = ocp.CheckpointManager(
            root / "latest",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=False, create=True
            ),
        )
        self.best = ocp.CheckpointManager(
            root / "best",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda m: m["val_mae"],
                best_mode="min",
                enable_async_checkpointing=False,
                create=True,
            ),
        )

    @staticmethod
    def _item(state: TrainState, epoch: int) -> dict[str, Any]:
        return {"state": state, "epoch": np.asarray(epoch, np.int64)}

    def save(self, state: TrainState, epoch: int, val_mae: float | None) -> None:
        item = self._item(state, epoch)
        self.latest.save(epoch, args=ocp.args.StandardSave(item), force=True)
        if val_mae is not None:
            self.best.save(
                epoch, args=ocp.args.StandardSave(item), metrics={"val_mae": val_mae}, force=True
            )

    def restore_latest(self, template: TrainState) -> tuple[TrainState, int] | None:
        step = self.latest.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self._item(template, 0))
        item = self.latest.restore(step, args=ocp.args.StandardRestore(abstract))
        return item["state"], int(item["epoch"])

    def restore_best(self, template: TrainState) -> TrainState:
        step = self.best.best_step()
        manager = self.best
        if step is None:
            step, manager = self.latest.latest_step(), self.latest
        if step is None:
            raise FileNotFoundError("the run has no checkpoint yet")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self._item(template, 0))
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))["state"]

    def close(self) -> None:
        self.latest.close()
        self.best.close()
