"""Cost per snapshot of ``gears_h datagen`` (wall and CPU, one thread) for the two shipped
recipes, and how closely the generated blocks reproduce the shipped snapshots.

* h-BN 5×5, GPAW 26.7.0 LCAO PBE/dzp (``shared/data/README.md`` §4.1): Γ-only SCF,
  h = 0.2 Å, Fermi–Dirac 0.01 eV, convergence 1e-5 (density) / 1e-6 eV (energy), blocks
  ≥ 1e-6, on the geometry of the shipped snapshot ``hbn5x5_000`` (``--hbn-supercell N``
  measures a smaller N×N cell of the same recipe instead, seed 1000, when 5×5 is too slow);
* 1-butanol, PySCF RKS PBE/def2-SVP (§4.3), conv_tol 1e-12 Ha, on the geometry of the shipped
  snapshot ``butanol_000``.

For each: SCF, extraction (GPAW: fixed-density H(k), S(k) on the Fourier mesh + transform;
PySCF: F, S, permutation) and the checks, from ``meta.json`` → ``cost``; the process's CPU
time; and, when the shipped snapshot is used, the largest element difference of H and S over
the rows both have, and the rows only one of them has.

    uv run --frozen python bench/datagen_cost.py [--write] [--skip-gpaw] [--hbn-supercell 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from results_file import write_section

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GEARS_H_SHARED_DATA", ROOT.parent / "shared" / "data"))
SECTION = "Data generation cost (gears_h datagen)"
sys.path.insert(0, str(ROOT))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rows(folder: Path) -> dict:
    from gears_h_core.assemble.blocks import block_matrix_rows
    from training.data.snapshot import read_snapshot

    sh = read_snapshot(folder).hamiltonian
    out = {}
    for what, bm in (("H", sh.H), ("S", sh.S)):
        i, j, shift, blocks = block_matrix_rows(bm)
        out[what] = {
            (int(a), int(b), *map(int, n)): blk
            for a, b, n, blk in zip(i, j, shift, blocks, strict=True)
        }
        out[what + "_onsite"] = [g for g in bm.onsite]
    return out


def compare(ours: Path, shipped: Path) -> dict:
    """Largest |ΔH| (eV) and |ΔS| over common rows and on-site blocks; rows in one only."""
    a, b = _rows(ours), _rows(shipped)
    res = {}
    for what in ("H", "S"):
        common = set(a[what]) & set(b[what])
        diff = max(float(np.abs(a[what][k] - b[what][k]).max()) for k in common)
        for ga, gb in zip(a[what + "_onsite"], b[what + "_onsite"], strict=True):
            diff = max(diff, float(np.abs(ga.blocks - gb.blocks).max()))
        only_a = set(a[what]) - common
        only_b = set(b[what]) - common
        res[what] = {
            "max_diff": diff,
            "common": len(common),
            "only_ours": len(only_a),
            "only_shipped": len(only_b),
            "max_only": max(
                [float(np.abs(a[what][k]).max()) for k in only_a]
                + [float(np.abs(b[what][k]).max()) for k in only_b]
                + [0.0]
            ),
        }
    return res


def run(argv: list[str], out: Path, name: str) -> dict:
    from training.cli import main

    t0, c0 = time.perf_counter(), _cpu()
    status = main(argv)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    if status != 0:
        raise SystemExit(f"datagen exited {status}: {' '.join(argv)}")
    meta = json.loads((out / name / "meta.json").read_text())
    return {"meta": meta, "wall": wall, "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write the section of RESULTS.md")
    ap.add_argument("--skip-gpaw", action="store_true")
    ap.add_argument("--skip-pyscf", action="store_true")
    ap.add_argument("--hbn-supercell", type=int, default=5, help="N of the N×N h-BN cell")
    args = ap.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        if not args.skip_gpaw:
            from ase.io import read, write

            out = tmpd / "hbn"
            if args.hbn_supercell == 5:
                shipped = DATA / "hbn_pbe_dzp" / "train" / "hbn5x5_000"
                src = tmpd / "hbn5x5_000.extxyz"
                write(src, read(shipped / "atoms.extxyz"))
                label = "h-BN 5×5 (50 atoms, 650 orbitals), GPAW LCAO PBE/dzp, Γ-only SCF"
            else:
                from training.datagen.sampling import (
                    distort_periodic,
                    hbn_supercell,
                    write_samples,
                )

                shipped = None
                n = args.hbn_supercell
                src = write_samples(
                    tmpd / f"hbn{n}x{n}_000.extxyz",
                    [distort_periodic(hbn_supercell(n, 2.51, 11.0), 1000)],
                )
                label = f"h-BN {n}×{n} ({2 * n * n} atoms; NOT the 5×5 cell), GPAW PBE/dzp"
            argv = ["datagen", "gpaw", str(src), "-o", str(out), "--basis", "dzp"]
            argv += ["--kpts", "1", "1", "1", "--h", "0.2", "--smearing", "0.01"]
            argv += ["--threshold", "1e-6"]
            r = run(argv, out, src.stem)
            r["label"] = label
            r["cmp"] = compare(out / src.stem, shipped) if shipped is not None else None
            results.append(r)
        if not args.skip_pyscf:
            shipped = DATA / "butanol_pbe_def2svp" / "train" / "butanol_000"
            from ase.io import read, write

            src = tmpd / "butanol_000.xyz"
            atoms = read(shipped / "atoms.extxyz")
            atoms.pbc = False
            write(src, atoms)
            out = tmpd / "butanol"
            argv = ["datagen", "pyscf", str(src), "-o", str(out), "--xc", "PBE"]
            argv += ["--basis", "def2-svp"]
            r = run(argv, out, src.stem)
            r["label"] = "1-butanol (15 atoms, 120 orbitals), PySCF RKS PBE/def2-SVP"
            r["cmp"] = compare(out / src.stem, shipped)
            results.append(r)

    lines = [
        "One snapshot each, one thread (`--threads 1`), in-process (`-j 1`). SCF, extraction "
        "and checks from the snapshot's `meta.json` → `cost` (wall s / CPU s); total = the "
        "whole `gears_h datagen` call (reading, SCF, extraction, writing, checks).",
        "",
        "| recipe | SCF wall / CPU (s) | extraction wall / CPU (s) | checks wall / CPU (s) "
        "| total wall / CPU (s) | SCF iterations | rows | max Δε vs code, stored f32 (eV) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r["meta"]["cost"]
        ch = r["meta"]["checks"]
        dev = max(ch[p]["f32_vs_code_window"] for p in ("gamma", "k_test") if p in ch)
        lines.append(
            f"| {r['label']} | {c['scf_wall_s']:.1f} / {c['scf_cpu_s']:.1f} | "
            f"{c['extract_wall_s']:.1f} / {c['extract_cpu_s']:.1f} | "
            f"{c['check_wall_s']:.2f} / {c['check_cpu_s']:.2f} | {r['wall']:.1f} / {r['cpu']:.1f} | "
            f"{r['meta'].get('scf_iterations')} | {r['meta']['n_offdiag_rows']} | {dev:.1e} |"
        )
    lines += [
        "",
        "Agreement with the shipped snapshot of the same geometry (same code version):",
        "",
    ]
    lines += [
        "| recipe | max \\|ΔH\\| common rows (eV) | max \\|ΔS\\| | rows common / only ours "
        "/ only shipped | largest block only in one (H eV) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if r["cmp"] is None:
            lines.append(f"| {r['label']} | — | — | — | — |")
            continue
        h, s = r["cmp"]["H"], r["cmp"]["S"]
        lines.append(
            f"| {r['label']} | {h['max_diff']:.1e} | {s['max_diff']:.1e} | "
            f"{h['common']} / {h['only_ours']} / {h['only_shipped']} | {h['max_only']:.1e} |"
        )
    body = "\n".join(lines)
    print(body)
    if args.write:
        cmd = "uv run --frozen python bench/datagen_cost.py " + " ".join(
            shlex.quote(a) for a in sys.argv[1:]
        )
        write_section(SECTION, body, cmd.strip())


if __name__ == "__main__":
    main()
