"""``gears_h datagen``: DFT training data (SPEC §3) from PySCF (molecules) or GPAW (LCAO).

``register_datagen(sub)`` adds the ``datagen`` command with the sub-commands ``pyscf``,
``gpaw`` and ``sample`` to the ``gears_h`` parser. Nothing heavy is imported until a
sub-command runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

__all__ = ["register_datagen"]

INSTALL = """\
install:
  PySCF (datagen pyscf, sample modes): the [dft] extra, from a wheel:
      uv sync --frozen --extra dft
  GPAW (datagen gpaw): 26.7.0 is an sdist whose C sources compile as C++17; it needs
  Debian's libxc-dev and libopenblas-dev and CC=g++ (about 30 s); gpaw-data brings the PAW
  setups and dzp basis sets (found without GPAW_SETUP_PATH):
      scripts/install_gpaw.sh
  which runs, when needed:
      apt-get install -y libxc-dev libopenblas-dev
      CC=g++ uv pip install gpaw==26.7.0 gpaw-data==1.2.1
"""

DESCRIPTION = f"""\
Generate training data: one snapshot folder per input frame under OUTDIR, in the
format of shared/data/README.md (H and S blocks in eV per lattice shift, reference
eigenvalues, meta.json with every setting, the cost and the check results).

Every snapshot is checked before it is published: hermiticity (each row has its
transposed partner), S positive definite, and the eigenvalues assembled from the stored
float32 blocks equal the DFT code's own (≤ 1e-4 eV near E_F) at Γ and, for periodic
cells, at an off-mesh k. A snapshot that fails goes to OUTDIR/.bad/ and the command exits
1; a bad input or an unconverged SCF writes nothing and exits 2. Folders are written to a
temporary name and renamed when done, so an interrupted run resumes by skipping the
finished snapshots. GPAW's text logs go to OUTDIR/.logs/NAME/.

{INSTALL}"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("structures", nargs="+", metavar="STRUCTURE_FILE", help="ASE-readable files")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="dataset folder")
    p.add_argument("--config", help="YAML file of settings (flags override it)")
    p.add_argument(
        "-j", "--workers", type=int, default=1, help="structures in parallel (process pool)"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="BLAS/OpenMP threads per worker (default 1)"
    )


def register_datagen(sub: Any) -> None:
    """Add ``datagen`` (``pyscf``, ``gpaw``, ``sample``) to the ``gears_h`` sub-parsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    d = sub.add_parser(
        "datagen",
        help="generate DFT training data (PySCF molecules, GPAW LCAO)",
        description=DESCRIPTION,
        formatter_class=fmt,
    )
    dsub = d.add_subparsers(dest="datagen_command", required=True, metavar="{pyscf,gpaw,sample}")

    ps = dsub.add_parser(
        "pyscf",
        help="molecules: PySCF Kohn–Sham F and S, all pairs",
        description="PySCF restricted Kohn–Sham (closed shell) for molecules; the Kohn–Sham "
        "matrix and overlap are permuted to GPAW's orbital order and cut into blocks for all "
        "atom pairs.\n\n" + INSTALL,
        formatter_class=fmt,
    )
    _common(ps)
    ps.add_argument("--xc", help="functional (default PBE; 'HF' for Hartree–Fock)")
    ps.add_argument("--basis", help="PySCF basis (default def2-svp)")
    ps.add_argument("--charge", type=int, help="total charge (default 0)")
    ps.add_argument("--conv-tol", type=float, dest="conv_tol_Ha", help="SCF tolerance, Ha")
    ps.add_argument("--max-cycle", type=int, help="SCF iterations (default 100)")
    ps.add_argument("--grids-level", type=int, help="DFT grid level (default 3)")
    ps.set_defaults(func=_cmd_pyscf)

    gp = dsub.add_parser(
        "gpaw",
        help="periodic cells: GPAW LCAO real-space H(T), S(T)",
        description="GPAW LCAO: SCF, then GPAW's own H(k), S(k) on an alias-free Γ-centred "
        "mesh with the converged potential, Fourier transformed into real-space blocks per "
        "lattice shift and kept above a threshold.\n\n" + INSTALL,
        formatter_class=fmt,
    )
    _common(gp)
    gp.add_argument("--xc", help="functional (default PBE)")
    gp.add_argument("--basis", help="LCAO basis (default dzp; e.g. sz(dzp))")
    gp.add_argument("--kpts", type=int, nargs=3, metavar="N", help="SCF k-mesh (default 1 1 1)")
    gp.add_argument("--h", type=float, help="grid spacing in Å (default 0.2)")
    gp.add_argument("--smearing", type=float, dest="smearing_eV", help="Fermi–Dirac width, eV")
    gp.add_argument("--maxiter", type=int, help="SCF iterations (default 333)")
    gp.add_argument("--charge", type=float, help="total charge (default 0)")
    gp.add_argument(
        "--threshold",
        type=float,
        help="keep blocks with max|H| ≥ this (eV) or max|S| ≥ this (default 1e-6)",
    )
    gp.add_argument(
        "--fourier-mesh", type=int, nargs=3, metavar="N", help="default: smallest alias-free"
    )
    gp.add_argument("--k-test", type=float, nargs=3, metavar="K", help="off-mesh check k")
    gp.set_defaults(func=_cmd_gpaw)

    sp = dsub.add_parser(
        "sample",
        help="seeded structure sampling (distorted cells, thermal normal modes)",
        description="Draw seeded samples into one multi-frame extended XYZ file; each frame "
        "records its seed and every drawn value, which datagen copies into meta.json.",
    )
    ssub = sp.add_subparsers(dest="sample_kind", required=True)
    per = ssub.add_parser("periodic", help="strain + ripple (sheets) + rattle of a cell")
    per.add_argument("structure", help="the ideal periodic cell")
    per.add_argument("-o", "--output", required=True, help="output .extxyz")
    per.add_argument("-n", type=int, default=1, help="number of samples")
    per.add_argument("--seed", type=int, default=0, help="seed of the first sample (+1 each)")
    per.add_argument("--strain", type=float, default=0.02, help="strain components in ±this")
    per.add_argument("--ripple", type=float, default=0.25, help="max ripple amplitude, Å")
    per.add_argument("--rattle", type=float, nargs=2, default=(0.02, 0.10), metavar="SIGMA")
    per.set_defaults(func=_cmd_sample_periodic)
    mod = ssub.add_parser("modes", help="thermal normal-mode samples of a molecule (PySCF)")
    mod.add_argument("structure", help="the reference geometry (ideally a minimum)")
    mod.add_argument("-o", "--output", required=True, help="output .extxyz")
    mod.add_argument("-n", type=int, default=1, help="number of samples")
    mod.add_argument("--seed", type=int, default=0, help="seed of the first sample (+1 each)")
    mod.add_argument("--temperature", type=float, nargs=2, default=(300.0, 700.0), metavar="K")
    mod.add_argument("--classical", action="store_true", help="classical instead of quantum")
    mod.add_argument("--xc", default="PBE", help="Hessian functional (default PBE)")
    mod.add_argument("--basis", default="def2-svp", help="Hessian basis (default def2-svp)")
    mod.add_argument(
        "--relax",
        type=float,
        nargs="?",
        const=1e-3,
        default=None,
        metavar="FMAX",
        help="first relax the structure (geomeTRIC, or ASE's BFGS without it, on PySCF "
        "gradients, same xc/basis) until every "
        "force is below FMAX eV/Å (default 1e-3); writes it to OUTPUT's stem + .reference.xyz",
    )
    mod.set_defaults(func=_cmd_sample_modes)


# --------------------------------------------------------------------------------------------


def _run(code: str, args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from rich.console import Console

    from training.datagen.blocks import DatagenError
    from training.datagen.config import GPAWSettings, PySCFSettings, load_settings
    from training.datagen.frames import read_frames
    from training.datagen.worker import Task
    from training.datagen.writer import is_finished

    if args.workers < 1 or args.threads < 1:
        raise ValueError("--workers and --threads must be ≥ 1")
    kind = PySCFSettings if code == "pyscf" else GPAWSettings
    settings = load_settings(kind, args.config, overrides)
    frames = read_frames(args.structures)
    if code == "pyscf":
        from training.datagen.pyscf_run import check_pyscf_input as check
    else:
        from training.datagen.gpaw_run import check_gpaw_input as check
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"{outdir}: exists and is not a folder")
    todo, skipped = [], []
    for frame in frames:
        try:
            check(frame.atoms, settings, frame.where)  # type: ignore[arg-type]
        except DatagenError as exc:
            raise ValueError(str(exc)) from None
        target = outdir / frame.name
        if target.exists():
            if not is_finished(target):
                raise ValueError(
                    f"{target}: exists but is not a finished datagen snapshot (remove it)"
                )
            skipped.append(frame)
        else:
            todo.append(frame)

    console = Console(stderr=True, soft_wrap=True)
    for frame in skipped:
        console.print(f"{frame.name}: finished earlier, skipped")
    dump = settings.model_dump(mode="json")
    tasks = [Task(code, dump, f, str(outdir), args.threads) for f in todo]
    results = _execute(tasks, min(args.workers, max(len(tasks), 1)), args.threads, console)

    errors = [r for r in results if r.status == "error"]
    bad = [r for r in results if r.status == "bad"]
    n_ok = sum(r.status == "ok" for r in results)
    console.print(
        f"{n_ok} written, {len(skipped)} skipped, {len(bad)} failed checks, "
        f"{len(errors)} errors -> {outdir}"
    )
    for r in bad:
        console.print(f"gears_h: {r.message}", markup=False, highlight=False)
    if errors:
        for r in errors[1:]:
            console.print(f"gears_h: {r.message}", markup=False, highlight=False)
        raise ValueError(errors[0].message)
    return 1 if bad else 0


def _execute(tasks: list, workers: int, threads: int, console: Any) -> list:
    """Run the tasks (in this process for one worker, else a spawn process pool)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from training.datagen.worker import THREAD_ENV, init_worker, run_task

    results = []
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=False) as bar:
        job = bar.add_task("datagen", total=len(tasks))

        def done(result: Any) -> None:
            results.append(result)
            tag = {"ok": "ok", "bad": "CHECKS FAILED", "error": "ERROR"}[result.status]
            text = result.message if result.status == "ok" else result.where
            bar.console.print(f"[{tag}] {text}", markup=False, highlight=False)
            bar.advance(job)

        if workers <= 1:
            for task in tasks:
                done(run_task(task))
            return results
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        saved = {var: os.environ.get(var) for var in THREAD_ENV}
        os.environ.update({var: str(threads) for var in THREAD_ENV})  # inherited by workers
        try:
            with ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker,
                initargs=(threads,),
            ) as pool:
                futures = [pool.submit(run_task, t) for t in tasks]
                for fut in as_completed(futures):
                    done(fut.result())
        finally:
            for var, value in saved.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value
    return results


def _cmd_pyscf(args: argparse.Namespace) -> int:
    overrides = {
        "xc": args.xc,
        "basis": args.basis,
        "charge": args.charge,
        "conv_tol_Ha": args.conv_tol_Ha,
        "max_cycle": args.max_cycle,
        "grids_level": args.grids_level,
    }
    return _run("pyscf", args, overrides)


def _cmd_gpaw(args: argparse.Namespace) -> int:
    overrides = {
        "xc": args.xc,
        "basis": args.basis,
        "kpts": args.kpts,
        "h": args.h,
        "smearing_eV": args.smearing_eV,
        "maxiter": args.maxiter,
        "charge": args.charge,
        "threshold_H_eV": args.threshold,
        "threshold_S": args.threshold,
        "fourier_mesh": args.fourier_mesh,
        "k_test": args.k_test,
    }
    return _run("gpaw", args, overrides)


def _read_one(path: str):  # -> Atoms
    from training.datagen.frames import read_frames

    frames = read_frames([path])
    if len(frames) != 1:
        raise ValueError(f"{path}: expected one structure, found {len(frames)} frames")
    return frames[0].atoms


def _cmd_sample_periodic(args: argparse.Namespace) -> int:
    from rich.console import Console

    from training.datagen.sampling import distort_periodic, write_samples

    atoms = _read_one(args.structure)
    if not any(atoms.pbc):
        raise ValueError(f"{args.structure}: not periodic (use 'sample modes' for molecules)")
    if args.n < 1:
        raise ValueError("-n must be ≥ 1")
    samples = [
        distort_periodic(
            atoms,
            args.seed + k,
            strain=args.strain,
            ripple=args.ripple,
            rattle=tuple(args.rattle),
        )
        for k in range(args.n)
    ]
    out = write_samples(args.output, samples)
    Console(stderr=True, soft_wrap=True).print(f"wrote {len(samples)} samples to {out}")
    return 0


def _cmd_sample_modes(args: argparse.Namespace) -> int:
    from rich.console import Console

    from training.datagen.pyscf_run import import_pyscf
    from training.datagen.sampling import (
        pyscf_hessian,
        pyscf_relax,
        thermal_normal_modes,
        write_samples,
    )

    atoms = _read_one(args.structure)
    if any(atoms.pbc):
        raise ValueError(f"{args.structure}: periodic (use 'sample periodic' for cells)")
    if args.n < 1:
        raise ValueError("-n must be ≥ 1")
    try:
        import_pyscf()
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if args.relax is not None and args.relax <= 0:
        raise ValueError("--relax: FMAX must be > 0")
    console = Console(stderr=True, soft_wrap=True)
    relaxation = None
    if args.relax is not None:
        from ase.io import write

        console.print(f"relaxing {args.structure} ({args.xc}/{args.basis}, fmax {args.relax:g})")
        atoms, relaxation = pyscf_relax(atoms, args.xc, args.basis, fmax=args.relax)
        ref_path = Path(args.output).with_suffix(".reference.xyz")
        write(ref_path, atoms, format="extxyz")
        console.print(
            f"relaxed in {relaxation['gradient_evaluations']} gradient evaluations (largest force "
            f"{relaxation['final_max_force_eV_per_A']:.2g} eV/Å) -> {ref_path}"
        )
    console.print(f"Hessian of {args.structure} ({args.xc}/{args.basis}) ...")
    hessian = pyscf_hessian(atoms, args.xc, args.basis)
    ref = f"{args.structure} ({args.xc}/{args.basis} Hessian)"
    if relaxation is not None:
        ref = f"{args.structure} relaxed ({args.xc}/{args.basis} Hessian)"
    samples = [
        thermal_normal_modes(
            atoms,
            hessian,
            args.seed + k,
            temperature=tuple(args.temperature),
            quantum=not args.classical,
            reference=ref,
        )
        for k in range(args.n)
    ]
    if relaxation is not None:
        for _, record in samples:
            record["reference_relaxation"] = relaxation
    out = write_samples(args.output, samples)
    console.print(f"wrote {len(samples)} samples to {out}")
    return 0
