"""Orbax checkpoints of a run: ``checkpoints/latest`` (last N epochs) and ``checkpoints/best``.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save resumes from the previous complete checkpoint. Saves are synchronous here so
that a checkpoint that has been reported is really on disk.

A save costs around a second of orbax bookkeeping whatever the device: comparable to an
epoch of a small data set on a CPU, and far more than one on a GPU (on an H200 an epoch of 8
h-BN snapshots trained in 0.15 s, while each validated epoch that wrote a new best took
2.4 s more). So both are written at most every ``every_s`` seconds, and
whenever asked with ``force`` (the last epoch) or on `close`. A new best validation error
between writes is kept as a host copy of the state and written with the next ``latest``
(which is therefore never older than ``best``). A run killed in between resumes from an
earlier epoch and redoes the rest identically; only a best that was still held in memory is
lost to it (the resumed run keeps the best written before).
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
        self._held_best: tuple[dict[str, Any], float] | None = None  # (host item, val MAE)
        self._best_mae: float | None = None  # the best validation so far, written or held
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
        """Hold a new best (``val_mae`` below every validation so far) as a host copy; write
        ``latest``, and a held best, if ``force`` or ``every_s`` has passed since the last
        write."""
        item = self._item(state, epoch)
        if val_mae is not None and val_mae < self._best_so_far():
            self._held_best = (jax.device_get(item), float(val_mae))
            self._best_mae = float(val_mae)
        now = time.monotonic()
        if force or now - self._last_save >= self.every_s:
            self.latest.save(epoch, args=ocp.args.StandardSave(item), force=True)
            self._last_save = now
            self.flush_best()

    def flush_best(self) -> None:
        """Write the held best, if any (`save` and `close` call it)."""
        if self._held_best is None:
            return
        item, val_mae = self._held_best
        self.best.save(
            int(item["epoch"]),
            args=ocp.args.StandardSave(item),
            metrics={"val_mae": val_mae},
            force=True,
        )
        self._held_best = None

    def _best_so_far(self) -> float:
        if self._best_mae is None:  # first call: what an earlier process wrote
            step = self.best.best_step()
            metrics = None if step is None else self.best.metrics(step)
            self._best_mae = math.inf if not metrics else float(metrics["val_mae"])
        return self._best_mae

    def has_checkpoint(self) -> bool:
        return self.latest.latest_step() is not None

    def restore_latest(self, template: TrainState) -> tuple[TrainState, int] | None:
        step = self.latest.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self._item(template, 0))
        item = _restore(self.latest, step, abstract)
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
        item = _restore(manager, step, abstract)
        return item["state"], int(item["epoch"])

    def close(self) -> None:
        """Write a held best, then release the managers."""
        self.flush_best()
        self.latest.close()
        self.best.close()


def _restore(manager: ocp.CheckpointManager, step: int, abstract: Any) -> Any:
    """``manager.restore`` into ``abstract``; a checkpoint whose tree differs from the model
    of the config (orbax prints both trees, thousands of characters) becomes one line."""
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except ValueError as exc:
        text = str(exc)
        if "mismatch" not in text.lower():
            raise
        first = text.split(" Expected identical structures", 1)[0].split(" Metadata keys", 1)[0]
        raise ValueError(
            f"{manager.directory}: checkpoint of epoch {step} does not fit the model of the "
            f"run's config.yaml ({first[:300]}); a run trained before a model option existed "
            "needs that option set to false in its config.yaml"
        ) from None
