"""When a run writes checkpoints: ``best`` only on a new best validation error, ``latest`` at
most every ``every_s`` seconds, on a new best and when forced (the last epoch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.checkpoints import RunCheckpoints


def _state(epoch: int) -> dict[str, np.ndarray]:
    return {"w": np.full(3, float(epoch), np.float32)}


def test_latest_is_throttled_and_best_written_only_on_improvement(tmp_path: Path) -> None:
    ckpt = RunCheckpoints(tmp_path, keep=10, every_s=3600.0)
    # epoch: validation MAE (None: not validated), forced
    plan = [(1, 5.0, False), (2, None, False), (3, 6.0, False), (4, 4.0, False), (5, None, True)]
    for epoch, val, force in plan:
        ckpt.save(_state(epoch), epoch, val, force=force)  # type: ignore[arg-type]
    # 1: first write; 4: new best; 5: forced. 2 and 3 fall inside the interval, 3 is worse
    assert sorted(ckpt.latest.all_steps()) == [1, 4, 5]
    assert ckpt.best.best_step() == 4
    assert sorted(ckpt.best.all_steps()) == [4]
    state, epoch = ckpt.restore(_state(0), which="best")
    assert epoch == 4 and np.array_equal(state["w"], _state(4)["w"])
    state, epoch = ckpt.restore(_state(0), which="latest")
    assert epoch == 5 and np.array_equal(state["w"], _state(5)["w"])
    ckpt.close()

    # a resumed run knows the best so far: a worse validation writes no new best
    again = RunCheckpoints(tmp_path, keep=10, every_s=3600.0)
    # (its first epoch is written: a process writes `latest` at once, then every every_s)
    again.save(_state(6), 6, 4.5)  # type: ignore[arg-type]
    assert again.best.best_step() == 4 and sorted(again.best.all_steps()) == [4]
    again.save(_state(7), 7, None)  # type: ignore[arg-type]
    again.save(_state(8), 8, 3.0)  # type: ignore[arg-type]
    assert again.best.best_step() == 8
    assert sorted(again.latest.all_steps()) == [1, 4, 5, 6, 8]
    again.close()


def test_every_epoch_with_a_zero_interval(tmp_path: Path) -> None:
    ckpt = RunCheckpoints(tmp_path, keep=10, every_s=0.0)
    for epoch in range(1, 4):
        ckpt.save(_state(epoch), epoch, None)  # type: ignore[arg-type]
    assert sorted(ckpt.latest.all_steps()) == [1, 2, 3]
    assert ckpt.best.best_step() is None
    ckpt.close()
