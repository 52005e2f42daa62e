"""When a run writes checkpoints: ``latest`` and ``best`` at most every ``every_s`` seconds,
when forced (the last epoch) and, for a best held in memory, on close; ``best`` holds the
lowest validation error seen, ``latest`` is never older than ``best``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.checkpoints import RunCheckpoints


def _state(epoch: int) -> dict[str, np.ndarray]:
    return {"w": np.full(3, float(epoch), np.float32)}


def test_writes_are_throttled_and_best_is_the_lowest_validation(tmp_path: Path) -> None:
    ckpt = RunCheckpoints(tmp_path, keep=10, every_s=3600.0)
    # epoch: validation MAE (None: not validated), forced
    plan = [(1, 5.0, False), (2, None, False), (3, 6.0, False), (4, 4.0, False)]
    for epoch, val, force in plan:
        ckpt.save(_state(epoch), epoch, val, force=force)  # type: ignore[arg-type]
    # 1: first write (latest and best); 2-4 fall inside the interval: the new best of
    # epoch 4 is held, not written
    assert sorted(ckpt.latest.all_steps()) == [1]
    assert ckpt.best.best_step() == 1
    ckpt.save(_state(5), 5, None, force=True)  # type: ignore[arg-type]
    # forced: latest 5, and the held best of epoch 4 (its state, not epoch 5's)
    assert sorted(ckpt.latest.all_steps()) == [1, 5]
    assert ckpt.best.best_step() == 4 and sorted(ckpt.best.all_steps()) == [4]
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
    again.save(_state(9), 9, 3.5)  # type: ignore[arg-type]
    assert again.best.best_step() == 4  # epoch 8 is held until the next write
    assert sorted(again.latest.all_steps()) == [1, 5, 6]
    again.close()  # writes the held best
    reread = RunCheckpoints(tmp_path, keep=10, create=False)
    assert reread.best.best_step() == 8
    state, epoch = reread.restore(_state(0), which="best")
    assert epoch == 8 and np.array_equal(state["w"], _state(8)["w"])
    reread.close()


def test_every_epoch_with_a_zero_interval(tmp_path: Path) -> None:
    ckpt = RunCheckpoints(tmp_path, keep=10, every_s=0.0)
    for epoch in range(1, 4):
        ckpt.save(_state(epoch), epoch, None)  # type: ignore[arg-type]
    assert sorted(ckpt.latest.all_steps()) == [1, 2, 3]
    assert ckpt.best.best_step() is None
    ckpt.close()


def test_a_checkpoint_of_another_model_is_refused_in_one_line(tmp_path: Path) -> None:
    ckpt = RunCheckpoints(tmp_path, keep=2)
    ckpt.save(_state(1), 1, 1.0, force=True)  # type: ignore[arg-type]
    ckpt.close()
    other = {"w": np.zeros(3, np.float32), "new_head": np.zeros(2, np.float32)}
    again = RunCheckpoints(tmp_path, keep=2, create=False)
    for which in ("best", "latest"):
        with pytest.raises(ValueError, match=r"does not fit the model .*new_head") as info:
            again.restore(other, which=which)
        message = str(info.value)
        assert "\n" not in message and len(message) < 700 and "set to false" in message
    again.close()
