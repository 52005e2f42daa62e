"""Inference cost of one large structure vs its size: h-BN and WSe2-like supercells, ~1k-16k atoms.

For every material and size a fresh subprocess (so peak RSS is that size's own) loads the
model, builds the supercell (the shipped structure repeated in-plane with ASE), and times:

* ``graph``: the neighbour graph (vesin, all edges and pairs with shifts);
* ``plan``: splitting it into node chunks (core + halo of edge hops) and pair chunks that fit
  the chunk budget;
* ``compile``: compiling the node-chunk and pair-chunk buckets and running each once (the
  warm-up, not in ``model``);
* ``model``: every chunk through the compiled network, outputs assembled (after warm-up; the
  median of ``--repeats`` runs, 3 by default);
* ``decode``: irreps -> orbital blocks (sparse `SparseHamiltonian`, H and S);
* ``wire``: the msgpack response (`encode_result` + `encode_response`), whose size is the
  output size;
* ``peak RSS`` (``resource.getrusage``) of the whole process, compilation included;
* ``pairs/s``: hopping pairs (both directions, H and S together) per second of ``model``;
* ``dense``: the baseline the issue measures upstream, assembling the dense Γ-point H
  (float32, ``gamma_fold(...).toarray()``) and writing it to disk, where it fits in memory.

Exponents of time and peak memory vs atoms come from a least-squares fit in log-log space.
The table replaces the section "## Inference scaling" of bench/RESULTS.md (other sections are
kept) unless ``--dry-run``.

    uv run python bench/inference_scaling.py --quick            # the two smallest sizes
    uv run python bench/inference_scaling.py --model /path/to/bundle --materials hbn

On a GPU machine, set ``XLA_PYTHON_CLIENT_MEM_FRACTION``, run with ``--dry-run --rows-out
rows.json`` (and ``--ladder-max-atoms`` for larger chunks), bring the JSON back and write the
section with ``--from-rows cpu.json rows.json`` (tables are grouped by device, material and
``--label``).

The WSe2-like supercells need a model that knows W and Se; when the model does not, a
random-parameter bundle with the same architecture and ladder, the shipped WSe2 basis and
8 Å hopping cutoffs is used for them (timings only; its blocks mean nothing), and the table
says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results_file import RESULTS, command_line, write_section

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GEARS_H_SHARED_DATA", ROOT.parent / "shared" / "data"))
SECTION = "Inference scaling"
W, SE = 74, 34
WSE2_PAIR_CUTOFF = 8.0  # Å, the hopping cutoff of the upstream WSe2 example

# in-plane repeats of the shipped cells: h-BN 50 atoms, WSe2 107 atoms
REPEATS = {
    "hbn": [(5, 4), (8, 5), (10, 8), (16, 10), (20, 16)],  # 1000 ... 16000 atoms
    "wse2": [(3, 3), (4, 4), (6, 6), (9, 8), (12, 12)],  # 963, 1712, 3852, 7704, 15408
}
T_START = time.perf_counter()


# --------------------------------------------------------------------------------------------
# structures and models


def base_structure(material: str) -> Path:
    if material == "hbn":
        files = sorted((DATA / "hbn_pbe_dzp" / "valid").glob("*/atoms.extxyz"))
    else:
        files = sorted((DATA / "wse2_gearsh_example").glob("*/*/atoms.extxyz"))
    if not files:
        raise SystemExit(f"no {material} structure under {DATA}")
    return files[0]


def supercell(material: str, repeat: tuple[int, int]) -> Any:  # -> ase.Atoms
    from ase.io import read

    atoms = read(base_structure(material), index=0)
    return atoms.repeat((repeat[0], repeat[1], 1))


def wse2_bundle(bundle: Any) -> Any:  # ModelBundle -> ModelBundle
    """A random-parameter bundle for W/Se with ``bundle``'s architecture and ladder."""
    import numpy as np

    from gears_h_core.basis.orbitals import OrbitalBasis
    from gears_h_core.graph.neighbors import build_neighbor_graph
    from gears_h_core.graph.padding import BucketLadder, pad_graphs
    from gears_h_core.io.bundle import ModelBundle
    from gears_h_core.model.hamiltonian import HamiltonianModel, ModelConstants
    from gears_h_core.model.layout import OutputLayout
    from gears_h_core.predict import params_to_flat
    from gears_h_core.structure import Structure
    from gears_h_core.testing import random_params, random_statistics

    ells = json.loads((base_structure("wse2").parent / "orbital_ells.json").read_text())
    basis = OrbitalBasis.from_json_dict(ells)
    layout = OutputLayout.create(basis, basis.species)
    stats = random_statistics(layout, np.random.default_rng(1), pair_cutoff=WSE2_PAIR_CUTOFF)
    config = bundle.config
    model = HamiltonianModel(config, layout.n_species, layout.onsite_irreps, layout.hopping_irreps)
    ladder = BucketLadder.from_dict({k: v for k, v in bundle.ladder.items() if k != "buckets"})
    example = Structure.from_arrays([W, SE], [[0.0, 0.0, 0.0], [2.5, 0.0, 0.0]])
    graph = build_neighbor_graph(example, config.edge_cutoff, WSE2_PAIR_CUTOFF)
    batch, _ = pad_graphs([graph], ladder.buckets[0])
    params = random_params(
        model, batch, ModelConstants.create(layout, stats), np.random.default_rng(0)
    )
    return ModelBundle(
        name="wse2-random",
        config=config,
        basis=basis,
        species=basis.species,
        pair_cutoff={
            (SE, SE): WSE2_PAIR_CUTOFF,
            (SE, W): WSE2_PAIR_CUTOFF,
            (W, W): WSE2_PAIR_CUTOFF,
        },
        params=params_to_flat(params),
        statistics=stats.to_numpy(),
        ladder=ladder.to_dict(),
        metadata={"purpose": "inference scaling benchmark (random parameters)"},
    )


def load_model(spec: str, material: str) -> tuple[Any, bool]:
    """``(bundle, random)``: the model, or its random W/Se twin for WSe2 if it lacks W/Se."""
    from gears_h_core.io.bundle import load_bundle
    from gears_h_core.io.model_source import resolve_bundle_path

    bundle = load_bundle(resolve_bundle_path(spec))
    if material == "wse2" and not {W, SE} <= set(bundle.species):
        return wse2_bundle(bundle), True
    return bundle, False


# --------------------------------------------------------------------------------------------
# one size, in a subprocess


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(args: argparse.Namespace) -> dict[str, Any]:
    import jax
    import numpy as np

    from gears_h_core.assemble.sparse import gamma_fold
    from gears_h_core.graph.padding import BucketLadder
    from gears_h_core.io.wire import encode_response, encode_result
    from gears_h_core.predict import Predictor
    from gears_h_core.structure import Structure

    if args.cache:
        jax.config.update("jax_compilation_cache_dir", args.cache)
    repeat = (args.repeat[0], args.repeat[1])
    bundle, random_model = load_model(args.model, args.material)
    ladder = None
    if args.ladder_max_atoms:
        params = {k: v for k, v in bundle.ladder.items() if k != "buckets"}
        params["max_atoms"] = args.ladder_max_atoms
        params["min_atoms"] = min(int(params["min_atoms"]), args.ladder_max_atoms)
        ladder = BucketLadder.from_dict(params)
    predictor = Predictor(bundle, ladder=ladder)
    t_ready = time.perf_counter()

    structure = Structure.from_ase(supercell(args.material, repeat))
    t = time.perf_counter()
    graph = predictor.graph(structure)
    t_graph = time.perf_counter() - t

    t = time.perf_counter()
    plan = predictor.plan_chunks(graph)
    t_plan = time.perf_counter() - t
    n_node_chunks, n_pair_chunks = len(plan.nodes), len(plan.pairs)
    halo = float(np.mean([c.graph.n_atoms / c.n_core for c in plan.nodes]))
    node_bucket, pair_bucket = plan.node_bucket.to_dict(), plan.pair_bucket.to_dict()

    t = time.perf_counter()
    predictor.warm_chunks(plan)
    t_compile = time.perf_counter() - t

    # the model time is the median of --repeats runs (this machine is shared and noisy);
    # each run re-plans (run_chunks consumes the plan's lists) and frees its outputs first
    times = []
    assembled = None
    for _ in range(args.repeats):
        del assembled
        plan = predictor.plan_chunks(graph)
        t = time.perf_counter()
        assembled = predictor.run_chunks(graph, plan)
        times.append(time.perf_counter() - t)
    t_model = float(np.median(times))
    n_pairs = graph.n_pairs
    del graph

    t = time.perf_counter()
    result = predictor.decode_assembled(assembled)
    t_decode = time.perf_counter() - t
    del assembled

    t = time.perf_counter()
    body = encode_response([encode_result(result, predictor.model_info)])
    t_wire = time.perf_counter() - t
    wire_bytes = len(body)
    del body
    # one run's process time: the repeated model runs beyond the median one are not counted
    t_total = time.perf_counter() - T_START - (sum(times) - t_model)
    peak = _peak_rss_bytes()
    n_orb = int(result.basis.orbital_offsets(structure.numbers)[-1])

    row: dict[str, Any] = {
        "material": args.material,
        "random_model": random_model,
        "model": bundle.name,
        "n_atoms": structure.n_atoms,
        "n_orb": n_orb,
        "n_pairs": n_pairs,
        "n_node_chunks": n_node_chunks,
        "n_pair_chunks": n_pair_chunks,
        "halo_factor": halo,
        "node_bucket": node_bucket,
        "pair_bucket": pair_bucket,
        "t_load": t_ready - T_START,
        "t_graph": t_graph,
        "t_plan": t_plan,
        "t_compile": t_compile,
        "t_model": t_model,
        "t_model_runs": times,
        "t_decode": t_decode,
        "t_wire": t_wire,
        "t_total": t_total,
        "peak_rss": peak,
        "wire_bytes": wire_bytes,
        "pairs_per_s": n_pairs / t_model,
        "device": str(jax.devices()[0].device_kind),
    }

    dense_bytes = n_orb * n_orb * 4  # float32 Γ-point H
    if dense_bytes <= args.dense_limit_gb * 1e9:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            exact = True
        except OSError:
            exact = False
        before = _status_kib("VmRSS") * 1024
        t = time.perf_counter()
        dense = gamma_fold(result.H, result.basis, structure.numbers, dtype=np.float32).toarray()
        with tempfile.TemporaryDirectory() as tmp:
            np.save(Path(tmp) / "H_gamma.npy", dense)
        t_dense = time.perf_counter() - t
        del dense
        row.update(
            dense_bytes=dense_bytes,
            t_dense=t_dense,
            dense_rss_growth=(_status_kib("VmHWM") * 1024 - before) if exact else None,
        )
    return row


def run_child(
    material: str, repeat: tuple[int, int], args: argparse.Namespace
) -> dict[str, Any] | None:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        material,
        "--repeat",
        str(repeat[0]),
        str(repeat[1]),
        "--model",
        args.model,
        "--dense-limit-gb",
        str(args.dense_limit_gb),
    ]
    if args.ladder_max_atoms:
        cmd += ["--ladder-max-atoms", str(args.ladder_max_atoms)]
    cmd += ["--repeats", str(args.repeats)]
    if args.cache:
        cmd += ["--cache", args.cache]
    env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    print(f"-- {material} {repeat}: {' '.join(shlex.quote(c) for c in cmd[1:])}", flush=True)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        print(f"   timed out after {args.timeout} s", flush=True)
        return None
    if proc.returncode != 0:
        print(f"   failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
        return None
    row: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print("   " + json.dumps(row), flush=True)
    return row


# --------------------------------------------------------------------------------------------
# report


def fit_exponent(x: list[float], y: list[float]) -> float | None:
    """Slope of log y vs log x (least squares); None for fewer than two points."""
    if len(x) < 2:
        return None
    lx = [math.log(v) for v in x]
    ly = [math.log(v) for v in y]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    sxy = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True))
    return sxy / sxx if sxx > 0 else None


def _mb(n: float | None) -> str:
    return "–" if n is None else f"{n / 1e6:,.0f}"


def _chunks(r: dict[str, Any]) -> tuple[str, str]:
    """(chunks, buckets) cells: node + pair chunks and their buckets (nodes/edges, nodes/
    pairs); rows of the earlier one-pass chunking have one count and one bucket n/e/p."""
    if "node_bucket" in r:
        nb, pb = r["node_bucket"], r["pair_bucket"]
        return (
            f"{r['n_node_chunks']} + {r['n_pair_chunks']}",
            f"{nb['n_nodes']:,}/{nb['n_edges']:,} + {pb['n_nodes']:,}/{pb['n_pairs']:,}",
        )
    b = r["bucket"]
    return str(r["n_chunks"]), f"{b['n_nodes']:,}/{b['n_edges']:,}/{b['n_pairs']:,}"


def _s(t: float | None) -> str:
    return "–" if t is None else (f"{t:.2f}" if t < 100 else f"{t:.0f}")


def table(rows: list[dict[str, Any]]) -> str:
    lines = []

    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        return r["device"], r["material"], r.get("label") or ""

    for group in dict.fromkeys(key(r) for r in rows):
        mine = [r for r in rows if key(r) == group]
        r0 = mine[0]
        device, material = group[0], group[1]
        name = {"hbn": "h-BN", "wse2": "WSe2-like"}[material] + f", {device}"
        if r0.get("label"):
            name += f" ({r0['label']})"
        model = f"model `{r0['model']}`" + (
            " (random parameters, same architecture and ladder as the model; timings only)"
            if r0["random_model"]
            else ""
        )
        lines += [f"### {name}", "", f"{model}.", ""]
        lines.append(
            "| atoms | pairs | chunks | chunk buckets | halo × | graph s | plan s | "
            "compile s | model s | "
            "decode s | wire s | total s | peak RSS MB | output MB | pairs/s | "
            "dense Γ MB | dense s | dense RSS+ MB |"
        )
        lines.append("|" + "---:|" * 18)
        for r in mine:
            chunks, buckets = _chunks(r)
            lines.append(
                f"| {r['n_atoms']:,} | {r['n_pairs']:,} | {chunks} | {buckets} | "
                f"{r['halo_factor']:.1f} | {_s(r['t_graph'])} | {_s(r['t_plan'])} | "
                f"{_s(r['t_compile'])} | {_s(r['t_model'])} | {_s(r['t_decode'])} | "
                f"{_s(r['t_wire'])} | {_s(r['t_total'])} | {_mb(r['peak_rss'])} | "
                f"{_mb(r['wire_bytes'])} | {r['pairs_per_s']:,.0f} | "
                f"{_mb(r.get('dense_bytes'))} | {_s(r.get('t_dense'))} | "
                f"{_mb(r.get('dense_rss_growth'))} |"
            )
        atoms = [float(r["n_atoms"]) for r in mine]
        fits = {
            "model time": fit_exponent(atoms, [r["t_model"] for r in mine]),
            "graph+plan+decode+wire time": fit_exponent(
                atoms, [r["t_graph"] + r["t_plan"] + r["t_decode"] + r["t_wire"] for r in mine]
            ),
            "peak RSS": fit_exponent(atoms, [float(r["peak_rss"]) for r in mine]),
            "output size": fit_exponent(atoms, [float(r["wire_bytes"]) for r in mine]),
        }
        text = ", ".join(f"{k} {v:.2f}" for k, v in fits.items() if v is not None)
        lines += ["", f"log-log exponents vs atoms ({len(mine)} sizes): {text or '–'}.", ""]
    return "\n".join(lines)


NOTE = (
    "Every row is one fresh process: load the bundle, build the supercell and its graph, "
    "split it into node chunks (core atoms + a halo of n_interactions edge hops, no pairs) "
    "and pair chunks (every pair (i, j, n) of some core atoms i, no halo) that fit the chunk "
    "budget (the edge and pair budget of the ladder's largest bucket), compile the node and "
    "the pair bucket and run each once (compile s), then time all chunks: node features "
    "first, then the pairs from them, partners averaged on the host (model s, the median of "
    "3 runs); decoding to "
    "sparse blocks (decode s) and the msgpack response with H and S (wire s, output MB). "
    "chunks: node + pair chunks; chunk buckets: node bucket nodes/edges + pair bucket "
    "nodes/pairs (rows of the earlier one-pass chunking, core + halo of pair cutoff + "
    "n_interactions hops: one count and one bucket nodes/edges/pairs). total s: process "
    "start to response bytes, compilation included. halo ×: node-chunk atoms / core atoms. "
    "pairs/s: directed hopping pairs (H and S) per model second. dense: the upstream-style "
    "baseline, the dense float32 Γ-point H assembled from the same blocks and written to "
    "disk (only where it fits; RSS+ is its own peak growth)."
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="bundle directory or 'default'")
    p.add_argument("--materials", nargs="+", choices=sorted(REPEATS), default=["hbn", "wse2"])
    p.add_argument("--quick", action="store_true", help="the two smallest sizes only")
    p.add_argument("--sizes", type=int, help="the first N sizes (default all five)")
    p.add_argument(
        "--ladder-max-atoms",
        type=int,
        help="override the bundle ladder's max_atoms (as GEARS_H_LADDER_MAX_ATOMS does)",
    )
    p.add_argument("--dense-limit-gb", type=float, default=4.0, help="largest dense Γ matrix")
    p.add_argument("--timeout", type=int, default=7200, help="seconds per size")
    p.add_argument("--cache", help="JAX persistent compilation cache directory")
    p.add_argument(
        "--repeats", type=int, default=3, help="model runs per size (their median is reported)"
    )
    p.add_argument("--dry-run", action="store_true", help="print, do not touch RESULTS.md")
    p.add_argument("--rows-out", type=Path, help="also save the measured rows (JSON)")
    p.add_argument(
        "--from-rows",
        type=Path,
        nargs="+",
        help="measure nothing: report rows saved by --rows-out (e.g. from a GPU machine)",
    )
    p.add_argument("--label", help="a note for these rows' table headings (e.g. the ladder)")
    p.add_argument("--note", help="a paragraph printed under the section's explanation")
    p.add_argument("--child", choices=sorted(REPEATS), help=argparse.SUPPRESS)
    p.add_argument("--repeat", type=int, nargs=2, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)

    if args.child:
        args.material = args.child
        print(json.dumps(child(args)))
        return 0

    n_sizes = 2 if args.quick else (args.sizes or 5)
    rows = []
    if args.from_rows:
        for path in args.from_rows:
            rows.extend(json.loads(path.read_text()))
    else:
        for material in args.materials:
            for repeat in REPEATS[material][:n_sizes]:
                row = run_child(material, repeat, args)
                if row is not None:
                    rows.append(row | {"label": args.label})
                    if args.rows_out:  # after every size, so an interrupted run keeps them
                        args.rows_out.write_text(json.dumps(rows, indent=1))
    if not rows:
        print("no size completed", file=sys.stderr)
        return 1
    body = NOTE + ("\n\n" + args.note if args.note else "") + "\n\n" + table(rows)
    print(body)
    if not args.dry_run:
        write_section(SECTION, body, command_line("inference_scaling.py", argv))
        print(f"wrote section '{SECTION}' of {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
