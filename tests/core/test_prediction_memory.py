"""Host memory of chunked prediction grows with the output, not with the structure squared
(issue 6): predicting a large h-BN sheet in chunks needs at most about twice the bytes of its
sparse result on top of what the process held before.

Measured in a fresh subprocess (this file run as a script): a tiny random-parameter model,
warmed up on the structure's own chunk bucket; then the peak resident set (VmHWM, reset
through ``/proc/self/clear_refs`` where allowed) and the peak of numpy allocations
(tracemalloc) during `Predictor.predict_large`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np

B, N = 5, 7
PAIR_CUTOFF = 4.0
MIB = 1 << 20
# fixed allowance on top of 2 × output: the full graph (~50 B per edge and pair), the chunk
# graphs and padded batches, allocator slack
FIXED_RSS = 96 * MIB
FIXED_NUMPY = 48 * MIB


def _sheet(nx: int, ny: int):  # -> Structure
    from gears_h_core.structure import Structure

    a, d = 2.50, 1.443
    base = np.array([[0.0, 0.0, 0.0], [0.0, d, 0.0], [a / 2, 1.5 * d, 0.0], [a / 2, 2.5 * d, 0.0]])
    cells = np.array([[x * a, y * 3 * d, 0.0] for x in range(nx) for y in range(ny)])
    pos = (cells[:, None, :] + base[None]).reshape(-1, 3)
    pos += np.random.default_rng(0).uniform(-0.05, 0.05, pos.shape)
    cell = [[nx * a, 0.0, 0.0], [0.1, ny * 3 * d, 0.0], [0.0, 0.0, 0.0]]
    return Structure.from_arrays([B, N, B, N] * (nx * ny), pos, cell, [True, True, False])


def _predictor():  # -> Predictor
    from gears_h_core.basis.orbitals import OrbitalBasis
    from gears_h_core.graph.padding import BucketLadder
    from gears_h_core.predict import Predictor
    from gears_h_core.testing import random_bundle, tiny_model_config

    basis = OrbitalBasis({B: (0, 1, 0, 1, 2), N: (0, 1, 0, 1, 2)})
    config = tiny_model_config()
    ladder = BucketLadder(64, 500, 2.0, edges_per_atom=16, pairs_per_atom=32)
    bundle = random_bundle(basis, config, ladder, PAIR_CUTOFF, name="tiny-random-bn")
    return Predictor(bundle)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _output_bytes(result) -> int:  # SparseHamiltonian -> int
    total = 0
    for matrix in (result.H, result.S):
        if matrix is None:
            continue
        for g in matrix.onsite:
            total += g.atoms.nbytes + g.blocks.nbytes
        for h in matrix.hopping:
            total += h.i.nbytes + h.j.nbytes + h.shift.nbytes + h.blocks.nbytes
    return total


def child(nx: int, ny: int) -> dict[str, float]:
    """Runs in the subprocess: warm up, then measure one `predict_large`."""
    import gc

    predictor = _predictor()
    structure = _sheet(nx, ny)
    graph = predictor.graph(structure)
    plan = predictor.plan_chunks(graph)
    n_chunks = len(plan.nodes) + len(plan.pairs)
    # warm-up: compile both chunk buckets and run each once (XLA's buffers are allocated)
    predictor.warm_chunks(plan)
    del plan, graph
    gc.collect()

    rss_before = _status_kib("VmRSS") * 1024
    exact = _reset_peak_rss()
    hwm_before = _status_kib("VmHWM") * 1024
    tracemalloc.start()
    result = predictor.predict_large(structure)
    _, numpy_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm_after = _status_kib("VmHWM") * 1024
    n_pairs = result.H.n_pairs
    return {
        "n_atoms": structure.n_atoms,
        "n_pairs": n_pairs,
        "n_chunks": n_chunks,
        "compile_count": predictor.compile_count,
        "output_bytes": _output_bytes(result),
        "numpy_peak": numpy_peak,
        # with the peak reset, the growth of the peak; else the peak above the warm process
        "rss_growth": hwm_after - (rss_before if exact else hwm_before),
        "rss_exact": exact,
    }


def _measure(nx: int, ny: int) -> dict[str, float]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, __file__, str(nx), str(ny)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_peak_memory_of_4000_atoms_bounded_by_output() -> None:
    """4,000 atoms, 72,000 pairs, 13 chunks: about 40 s here, nearly all of it compiling
    the chunk bucket (a 1,040-atom sheet takes as long, so there is no smaller variant)."""
    nx, ny = 40, 25
    m = _measure(nx, ny)
    assert m["n_atoms"] == 4 * nx * ny and m["n_chunks"] >= 3
    assert m["compile_count"] == 2  # one bucket for the node chunks, one for the pair chunks
    out = m["output_bytes"]
    # the sparse result itself: ~ n_pairs blocks of 13 × 13 float32, H and S
    assert out >= m["n_pairs"] * 13 * 13 * 4 * 2
    assert m["numpy_peak"] <= 2 * out + FIXED_NUMPY, m
    assert m["rss_growth"] <= 2 * out + FIXED_RSS, m


if __name__ == "__main__":
    print(json.dumps(child(int(sys.argv[1]), int(sys.argv[2]))))
