"""Host cost of decoding a prediction to orbital blocks, next to the device call it follows.

For the service, decoding is host work per structure: the network gives universal irreps per
atom and pair, and `Predictor.decode_one` turns them into H and S blocks (one change of
basis per species pair, sorted rows). This prints, per validation set of the default model
(or MODEL), the device call of one batch (pad excluded) and the decoding of H and S per
structure, medians over repeats, and with ``--write`` stores the table in bench/RESULTS.md.
numpy's BLAS runs one thread, as in the service (``GEARS_H_BLAS_THREADS``, default 1).

    uv run python bench/decode_cost.py --write
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from results_file import publish

from gears_h_core.io.bundle import load_bundle
from gears_h_core.io.model_source import resolve_bundle_path
from gears_h_core.io.structures import read_structure_files
from gears_h_core.predict import Predictor

SETS = ("butanol_pbe_def2svp", "hbn_pbe_dzp")


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(predictor: Predictor, folder: Path, batch: int, repeats: int) -> str:
    files = sorted(str(p) for p in folder.glob("*/atoms.extxyz"))[:batch]
    structures = read_structure_files(files)
    graphs = [predictor.graph(s) for s in structures]
    prepared = predictor.prepare_graphs(graphs)
    out = predictor.run(prepared)  # compiles
    shares = predictor.split(prepared, out)
    run_s = _median_s(lambda: predictor.run(prepared), repeats)
    decode_s = _median_s(lambda: [predictor.decode_one(s) for s in shares], repeats)
    n = len(graphs)
    pairs = sum(g.n_pairs for g in graphs) / n
    return (
        f"| {folder.parent.name} | {structures[0].n_atoms} | {pairs:.0f} | {n} | "
        f"{run_s / n * 1e3:.2f} | {decode_s / n * 1e3:.2f} | {decode_s / run_s:.2f} |"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default="default", help="bundle, run dir or 'default'")
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--batch", type=int, default=6, help="structures per device call")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--note", default="", help="text put before the table")
    p.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = p.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")  # as the service does
    predictor = Predictor(load_bundle(resolve_bundle_path(args.model)))
    rows = [
        "| validation set | atoms | pairs | structures per call | device call per structure "
        "(ms) | decode H and S per structure (ms) | decode / device call |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in SETS:
        rows.append(measure(predictor, args.data / name / "valid", args.batch, args.repeats))
    publish(
        "Decoding cost (host)", args.note, ["\n".join(rows) + "\n"], "decode_cost.py", args.write
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
