"""The whole ``gears_h infer`` command on one large WSe2-like structure, as a user runs it.

Issue 6 measures upstream GEARS H's ``infer`` on WSe2 supercells of the 107-atom example
(1,712 atoms: 44.0 s, 5.28 GB peak RSS, a 950 MB dense output; it recompiles on every call).
This script writes the supercells as extxyz files, then runs, each in a fresh process
(``uv run``-free: ``python -m training.cli``, so the interpreter start is counted but not the
package manager):

* ``cold``: ``gears_h infer MODEL X.extxyz -o X.msgpack --cache-dir EMPTY`` (traces and
  compiles every bucket it uses, as on a first run);
* ``warm``: the same command again with the now filled cache directory (what every later run
  of the same model on the same bucket sizes costs).

Each size runs ``--repeats`` times (default 3; every cold run with a new empty cache) and
reports the median wall time and the largest peak RSS. Wall time comes from the parent, peak
RSS from ``getrusage(RUSAGE_CHILDREN)`` of a fresh helper process per run. Python's bytecode
cache is on, as in any default installation (pip
and ``uv sync --compile-bytecode`` compile at install time, the Docker images too): the
script compiles the environment's modules once with ``compileall`` before measuring and
runs the commands without ``PYTHONDONTWRITEBYTECODE`` (which some sandboxes set; it makes
every run recompile ~3,000 modules from source, ~10 s on this machine). The model is the bundle given, or, for a model without W and Se, its
random-parameter W/Se twin (same architecture and ladder, 8 Å hopping cutoffs; timings only)
saved as a bundle first.

    uv run python bench/infer_command.py                  # 963 and 1,712 atoms
    uv run python bench/infer_command.py --sizes 3 --dry-run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from inference_scaling import REPEATS, load_model, supercell
from results_file import write_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "gears_h infer command (WSe2-like)"
UPSTREAM = {963: (36.4, 3.82e9, 300e6), 1712: (44.0, 5.28e9, 950e6)}  # s, RSS bytes, output


def run_measured(argv: list[str]) -> dict[str, float]:
    """Run ``argv`` in a helper process that reports its child's wall time and peak RSS."""
    helper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "wall = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(json.dumps({'rc': rc, 'wall_s': wall, 'peak_rss': rss}))\n"
    )
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run(
        [sys.executable, "-c", helper, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(argv)} exited {result['rc']}:\n{proc.stderr[-3000:]}")
    return result


def compile_bytecode() -> None:
    """Write the bytecode cache of the environment and the project, as an install does."""
    import sysconfig

    dirs = [sysconfig.get_paths()["purelib"], ROOT / "gears_h_core", ROOT / "training"]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", *map(str, dirs)],
        stdout=subprocess.DEVNULL,
        check=False,
    )


def measure(model: str, sizes: int, work: Path, repeats: int) -> list[dict[str, Any]]:
    from ase.io import write

    compile_bytecode()
    from gears_h_core.io.bundle import save_bundle

    bundle, random_model = load_model(model, "wse2")
    bundle_dir = work / "bundle"
    save_bundle(bundle, bundle_dir)
    rows = []
    for repeat in REPEATS["wse2"][:sizes]:
        atoms = supercell("wse2", repeat)
        structure = work / f"wse2_{len(atoms)}.extxyz"
        write(structure, atoms)
        row: dict[str, Any] = {"n_atoms": len(atoms), "model": bundle.name}
        row["random_model"] = random_model
        runs: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
        for k in range(repeats):  # cold (new empty cache), then warm with that cache
            cache = work / f"cache_{len(atoms)}_{k}"
            for phase in ("cold", "warm"):
                out = work / f"wse2_{len(atoms)}_{phase}.msgpack"
                argv = [sys.executable, "-m", "training.cli", "infer", str(bundle_dir)]
                argv += [str(structure), "-o", str(out), "--cache-dir", str(cache)]
                r = run_measured(argv)
                runs[phase].append(r)
                row["output_bytes"] = out.stat().st_size
                print(
                    f"{len(atoms)} atoms, {phase}: {r['wall_s']:.1f} s, "
                    f"{r['peak_rss'] / 1e9:.2f} GB"
                )
            shutil.rmtree(cache)
        for phase, rs in runs.items():
            row[f"{phase}_wall_s"] = statistics.median(r["wall_s"] for r in rs)
            row[f"{phase}_wall_runs"] = [r["wall_s"] for r in rs]
            row[f"{phase}_peak_rss"] = max(r["peak_rss"] for r in rs)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| atoms | cold s | warm s | peak RSS cold / warm (GB) | output (MB) | "
        "upstream s | upstream RSS (GB) | upstream output (MB) | upstream / cold | "
        "upstream / warm |",
        "|" + "---:|" * 10,
    ]
    for r in rows:
        up = UPSTREAM.get(r["n_atoms"])
        ups = ("–", "–", "–", "–", "–")
        if up is not None:
            ups = (
                f"{up[0]:.1f}",
                f"{up[1] / 1e9:.2f}",
                f"{up[2] / 1e6:,.0f}",
                f"{up[0] / r['cold_wall_s']:.2f}×",
                f"{up[0] / r['warm_wall_s']:.2f}×",
            )
        lines.append(
            f"| {r['n_atoms']:,} | {r['cold_wall_s']:.1f} | {r['warm_wall_s']:.1f} | "
            f"{r['cold_peak_rss'] / 1e9:.2f} / {r['warm_peak_rss'] / 1e9:.2f} | "
            f"{r['output_bytes'] / 1e6:,.0f} | " + " | ".join(ups) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="bundle directory or 'default'")
    p.add_argument("--sizes", type=int, default=2, help="the first N WSe2-like sizes")
    p.add_argument(
        "--repeats", type=int, default=3, help="runs per phase (median wall, largest RSS)"
    )
    p.add_argument("--dry-run", action="store_true", help="print, do not touch RESULTS.md")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args.model, args.sizes, Path(tmp), args.repeats)
    r0 = rows[0]
    model = f"model `{r0['model']}`" + (
        " (random parameters with the default model's architecture and ladder; timings only)"
        if r0["random_model"]
        else ""
    )
    body = (
        f"The whole `gears_h infer BUNDLE X.extxyz -o X.msgpack` command (H and S, all "
        f"shifts) in a fresh process per run, {model}: cold = empty `--cache-dir` (traces and "
        "compiles every bucket it uses), warm = the same command again with that cache. Wall "
        "time includes the interpreter start, imports, reading the bundle and the structure, "
        "and writing the output (Python's bytecode cache on, as after any install); "
        f"the median of {args.repeats} runs (each cold run with a new empty cache); peak RSS is "
        "the largest of the command's. Upstream GEARS H (issue 6, this "
        "machine class) writes a dense float32 Γ matrix and recompiles on every call. "
        f"Measured in {time.perf_counter() - t0:.0f} s.\n\n" + table(rows)
    )
    print(body)
    if not args.dry_run:
        command = (
            "uv run python bench/infer_command.py"
            + (f" --sizes {args.sizes}" if args.sizes != 2 else "")
            + (f" --repeats {args.repeats}" if args.repeats != 3 else "")
        )
        write_section(SECTION, body, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
