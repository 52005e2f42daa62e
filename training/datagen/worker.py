"""One structure, start to finish, in the calling process or a pool worker.

`run_task` runs the DFT code with a bounded number of BLAS/OpenMP threads (default 1 per
worker), writes and checks the snapshot (`training.datagen.writer`) and returns a picklable
`TaskResult`; it never raises for a failure of its structure.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.datagen.blocks import DatagenError
from training.datagen.frames import Frame

__all__ = ["THREAD_ENV", "Task", "TaskResult", "init_worker", "run_task"]

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
LOG_DIR = ".logs"


@dataclass(frozen=True, eq=False)
class Task:
    code: str  # "pyscf" or "gpaw"
    settings: dict[str, Any]
    frame: Frame
    outdir: str
    threads: int


@dataclass(frozen=True)
class TaskResult:
    name: str
    where: str
    status: str  # "ok", "bad" (a check failed) or "error" (nothing written)
    message: str
    path: str | None = None


def init_worker(threads: int) -> None:
    """Pool initializer: thread counts for libraries loaded later in this process."""
    for var in THREAD_ENV:
        os.environ[var] = str(threads)


@contextlib.contextmanager
def _thread_limit(threads: int) -> Iterator[None]:
    """Bound the BLAS/OpenMP pools already loaded (call after importing the DFT code)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=threads):
        yield


def _generate(task: Task, started: float) -> Any:  # -> SnapshotOutcome
    from training.datagen.config import GPAWSettings, PySCFSettings
    from training.datagen.writer import write_snapshot

    frame = task.frame
    outdir = Path(task.outdir)
    if task.code == "pyscf":
        from training.datagen.pyscf_run import import_pyscf, run_pyscf

        pyscf_settings = PySCFSettings.model_validate(task.settings)
        import_pyscf().lib.num_threads(task.threads)
        with _thread_limit(task.threads):
            blocks = run_pyscf(frame.atoms, pyscf_settings, frame.where)
            return write_snapshot(
                blocks,
                outdir,
                frame.name,
                settings=pyscf_settings.model_dump(mode="json"),
                provenance=frame.provenance,
                check_settings=pyscf_settings.checks,
                default_window=10.0,
                threads=task.threads,
                started=started,
            )
    from training.datagen.gpaw_run import import_gpaw, run_gpaw

    gpaw_settings = GPAWSettings.model_validate(task.settings)
    import_gpaw()
    log_dir = outdir / LOG_DIR / frame.name
    log_dir.mkdir(parents=True, exist_ok=True)
    with _thread_limit(task.threads):
        blocks = run_gpaw(frame.atoms, gpaw_settings, frame.where, log_dir=log_dir)
        return write_snapshot(
            blocks,
            outdir,
            frame.name,
            settings=gpaw_settings.model_dump(mode="json"),
            provenance=frame.provenance,
            check_settings=gpaw_settings.checks,
            default_window=5.0,
            threads=task.threads,
            started=started,
        )


def run_task(task: Task) -> TaskResult:
    """Generate one snapshot; failures come back as ``status="error"`` with one line."""
    started = time.perf_counter()
    frame = task.frame
    try:
        outcome = _generate(task, started)
    except DatagenError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else "failed"
        if not msg.startswith(frame.where):
            msg = f"{frame.where}: {msg}"
        return TaskResult(frame.name, frame.where, "error", msg)
    except Exception as exc:  # a crash of the DFT code: report it in one line, go on
        first = str(exc).splitlines()[0] if str(exc) else ""
        return TaskResult(
            frame.name, frame.where, "error", f"{frame.where}: {type(exc).__name__}: {first}"
        )
    if outcome.ok:
        return TaskResult(frame.name, frame.where, "ok", outcome.summary, str(outcome.path))
    return TaskResult(
        frame.name,
        frame.where,
        "bad",
        f"{frame.where}: checks failed ({'; '.join(outcome.failed)}); kept in {outcome.path}",
        str(outcome.path),
    )
