"""``gears_h bands`` and ``gears_h dos``: electronic structure from predicted (or stored) blocks.

Both commands get H and S of one structure from

* a model (``MODEL STRUCTURE``: a bundle, a training run or ``default``, and any file ASE
  reads), or
* stored blocks (``FOLDER`` alone: a snapshot folder, e.g. DFT data or ``gears_h infer -o``
  output, or a DeepH directory), used as they are,

and compute eigenvalues through `gears_h_core.assemble.bands.band_energies` — the code path
of ``gears_h evaluate``'s eigenvalue errors. ``--reference FOLDER`` overlays the bands (DOS)
of the stored blocks of a snapshot folder of the same structure, computed the same way.
Plots use matplotlib's Agg canvas (no display); energies in plots are relative to E_F when
it is known (``--fermi-energy``, the folder's stored Fermi level, or the reference's).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gears_h_core.assemble.bands import (
    DEFAULT_DENSE_LIMIT,
    DEFAULT_N_WINDOW,
    BandStructure,
    OverlapNotPositiveDefiniteError,
    band_energies,
    band_path,
    gaussian_dos,
    kpoint_mesh,
    linear_kpoint_axis,
)
from gears_h_core.types import SparseHamiltonian

__all__ = ["cmd_bands", "cmd_dos", "parse_kpoints", "register_bands", "register_dos"]

#: default DOS k mesh: a Γ-centred mesh of about this real-space period per periodic axis (Å)
MESH_LENGTH = 30.0
#: default band-plot window around E_F (eV)
PLOT_WINDOW = (-6.0, 6.0)
#: the predicted structure and the --reference folder must agree to this (Å)
SAME_STRUCTURE_TOL = 1e-4


@dataclass(frozen=True, eq=False)
class _Source:
    """H and S of the structure to compute, and where they came from."""

    hamiltonian: SparseHamiltonian
    description: str
    label: str  # short, for plot legends
    fermi_energy: float | None
    gamma_only: bool = False


# --------------------------------------------------------------------------------------------
# inputs


def parse_kpoints(text: str) -> np.ndarray:
    """``"kx ky kz; kx ky kz; ..."`` (reduced; spaces or commas) -> float64 ``[n_k, 3]``."""
    points = []
    for n, item in enumerate(p for p in text.split(";") if p.strip()):
        parts = item.replace(",", " ").split()
        try:
            values = [float(x) for x in parts]
        except ValueError:
            values = []
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"--kpoints: k point {n} {item.strip()!r} is not three numbers")
        points.append(values)
    if not points:
        raise ValueError("--kpoints: no k point given (e.g. '0 0 0; 0.5 0 0')")
    return np.asarray(points, dtype=np.float64)


def _is_blocks_folder(path: Path) -> bool:
    from gears_h_core.io.deeph import is_deeph_folder

    snapshot = (path / "atoms.extxyz").is_file() and (path / "ijD.npz").is_file()
    return path.is_dir() and (snapshot or is_deeph_folder(path))


def _read_labeled(folder: Path) -> Any:  # -> LabeledStructure
    from training.data.snapshot import read_snapshot

    return read_snapshot(folder)


def _source(args: argparse.Namespace) -> _Source:
    """Prediction of ``args.model`` for ``args.structure``, or the stored blocks of a folder."""
    model = Path(args.model)
    if args.model != "default" and _is_blocks_folder(model):
        if args.structure is not None:
            raise ValueError(
                f"{model} holds stored blocks; give no STRUCTURE with a folder of blocks"
            )
        labeled = _read_labeled(model)
        ref = labeled.reference
        return _Source(
            hamiltonian=labeled.hamiltonian,
            description=f"stored blocks of {model}",
            label=model.resolve().name,
            fermi_energy=None if ref is None else ref.e_fermi,
            gamma_only=labeled.gamma_only,
        )
    if args.structure is None:
        raise ValueError(
            "give a STRUCTURE file to predict on (or a snapshot/DeepH folder instead of MODEL)"
        )
    from gears_h_core.io.structures import read_structure_files
    from training.export import default_cache_dir, load_predictor

    path = Path(args.structure)
    if path.is_dir() and (path / "atoms.extxyz").is_file():  # a snapshot folder: its structure
        path = path / "atoms.extxyz"
    structures = read_structure_files([path])
    if len(structures) != 1:
        raise ValueError(f"{path}: {len(structures)} frames; give a file with one structure")
    with tempfile.TemporaryDirectory() as tmp:
        predictor = load_predictor(args.model, Path(tmp), default_cache_dir())
        try:
            predictor.check_species(structures[0])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        [sh] = predictor.predict(structures)
    return _Source(
        hamiltonian=sh,
        description=f"model {predictor.bundle.name}",
        label=predictor.bundle.name,
        fermi_energy=None,
    )


def _reference(folder: str | None, sh: SparseHamiltonian) -> Any:  # LabeledStructure | None
    if folder is None:
        return None
    labeled = _read_labeled(Path(folder))
    a, b = sh.structure, labeled.structure
    same = (
        a.n_atoms == b.n_atoms
        and np.array_equal(a.numbers, b.numbers)
        and np.allclose(a.positions, b.positions, rtol=0, atol=SAME_STRUCTURE_TOL)
        and np.allclose(a.cell, b.cell, rtol=0, atol=SAME_STRUCTURE_TOL)
    )
    if not same:
        raise ValueError(
            f"--reference {folder}: holds another structure (atoms, order, positions or cell "
            "differ from the one computed)"
        )
    return labeled


def _with_overlap(source: _Source, reference: Any) -> SparseHamiltonian:
    sh = source.hamiltonian
    if sh.S is not None:
        return sh
    if reference is not None and reference.hamiltonian.S is not None:
        return replace(sh, S=reference.hamiltonian.S)
    raise ValueError(
        f"{source.description} has no overlap S; bands need S(k) (give --reference FOLDER "
        "to use its DFT overlap)"
    )


def _check_k(kpoints: np.ndarray, gamma_only: bool, what: str) -> None:
    if gamma_only and np.any(np.abs(kpoints) > 1e-12):
        raise ValueError(
            f"{what} holds Γ-only (image-summed) blocks: only k = 0 can be computed "
            "(--kpoints '0 0 0')"
        )


def _solve(
    sh: SparseHamiltonian,
    kpoints: np.ndarray,
    args: argparse.Namespace,
    fermi: float | None,
    *,
    threshold: float | None,
    what: str,
) -> BandStructure:
    from rich.console import Console
    from rich.progress import Progress

    center = args.center if args.center is not None else fermi
    n_orb = int(sh.basis.orbital_offsets(sh.structure.numbers)[-1])
    window = args.solver == "shift-invert" or (args.solver == "auto" and n_orb > args.dense_limit)
    if window and center is None:
        raise ValueError(
            f"{what}: {n_orb} orbitals need the shift-invert window around an energy: give "
            "--center or --fermi-energy (or --solver dense)"
        )
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"{what}: {len(kpoints)} k points", total=len(kpoints))
        try:
            return band_energies(
                sh,
                kpoints,
                solver=args.solver,
                dense_limit=args.dense_limit,
                n_window=args.n_window,
                center=center,
                overlap_threshold=threshold,
                progress=lambda done, total: progress.update(task, completed=done),
            )
        except OverlapNotPositiveDefiniteError as exc:
            hint = (
                "; pass --overlap-threshold 0.05 to project out the ill-conditioned overlap "
                "directions (canonical orthogonalisation, dense solver)"
                if threshold is None
                else ""
            )
            raise ValueError(f"{what}: {exc}{hint}") from None


def _ref_threshold(args: argparse.Namespace) -> float | None:
    if args.project_reference and args.overlap_threshold is None:
        raise ValueError("--project-reference needs --overlap-threshold")
    return args.overlap_threshold if args.project_reference else None


def _fermi(args: argparse.Namespace, source: _Source, reference: Any) -> float | None:
    if args.fermi_energy is not None:
        return float(args.fermi_energy)
    if source.fermi_energy is not None:
        return source.fermi_energy
    if reference is not None and reference.reference is not None:
        return reference.reference.e_fermi
    return None


# --------------------------------------------------------------------------------------------
# bands


def _kpoints(args: argparse.Namespace, sh: SparseHamiltonian) -> tuple[np.ndarray, Any]:
    """k points and the `BandPath` (None for an explicit list)."""
    st = sh.structure
    if args.kpoints is not None:
        return parse_kpoints(args.kpoints), None
    if args.path is None and not np.any(st.pbc):
        return np.zeros((1, 3)), None  # a molecule: Γ only
    path = band_path(st, args.path, args.npoints, tolerance=args.lattice_tolerance)
    return path.kpoints, path


def _save_png(fig: Any, out: Path) -> Path:
    """Render ``fig`` on the Agg canvas and write a compact PNG (64-colour palette, the lines
    and text stay crisp: plots have a handful of colours)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba())
    palette = image.convert("RGB").quantize(
        colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    palette.save(tmp, format="PNG", optimize=True)
    tmp.replace(out)
    return out


def _label(s: str) -> str:
    return "Γ" if s in ("G", "Gamma") else s


def plot_bands(
    out: Path,
    x: np.ndarray,
    eigenvalues: np.ndarray,
    *,
    fermi: float | None,
    special_x: np.ndarray | None,
    labels: tuple[str, ...] | None,
    reference: np.ndarray | None = None,
    ylim: tuple[float, float] | None = None,
    title: str = "",
    name: str = "prediction",
    reference_name: str = "DFT reference",
) -> Path:
    """Band structure PNG (Agg canvas): ``eigenvalues`` ``[n_k, n_bands]`` along ``x``."""
    from matplotlib.figure import Figure

    shift = 0.0 if fermi is None else fermi
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.subplots()
    single = x.shape[0] == 1
    if not single and not x[-1] > x[0]:  # k points that do not move (e.g. equivalent ones)
        x = np.arange(x.shape[0], dtype=np.float64)
    if reference is not None:
        ref = reference - shift
        if single:
            ax.hlines(ref[0], -0.4, 0.0, colors="black", linewidth=1.0, label=reference_name)
        else:
            ax.plot(x, ref, color="black", linewidth=1.2)
            ax.plot([], [], color="black", linewidth=1.2, label=reference_name)
    eig = eigenvalues - shift
    if single:
        x0 = 0.0 if reference is None else 0.05
        ax.hlines(eig[0], x0, x0 + 0.4, colors="tab:red", linewidth=1.0, label=name)
        ax.set_xticks([])
    else:
        ax.plot(x, eig, color="tab:red", linewidth=1.0, linestyle="--")
        ax.plot([], [], color="tab:red", linewidth=1.0, linestyle="--", label=name)
        ax.set_xlim(float(x[0]), float(x[-1]))
        if special_x is not None and labels is not None:
            ax.set_xticks(special_x, [_label(s) for s in labels])
            for sx in special_x:
                ax.axvline(sx, color="grey", linewidth=0.6)
        else:
            ax.set_xlabel("k-path length (1/Å)")
    if fermi is not None:
        ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_ylabel("E − E_F (eV)")
    else:
        ax.set_ylabel("E (eV)")
    if ylim is not None:
        ax.set_ylim(*ylim)
    elif fermi is not None:
        ax.set_ylim(*PLOT_WINDOW)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    return _save_png(fig, out)


def _summary(console: Any, bands: BandStructure, fermi: float | None, what: str) -> None:
    eig = bands.eigenvalues
    line = (
        f"{what}: {eig.shape[0]} k points × {eig.shape[1]} eigenvalues ({bands.solver}), "
        f"{eig.min():.3f} … {eig.max():.3f} eV"
    )
    if fermi is not None:
        below, above = eig[eig <= fermi], eig[eig > fermi]
        if below.size and above.size:
            vbm, cbm = float(below.max()), float(above.min())
            line += f"; E_F {fermi:.3f} eV, highest below {vbm:.3f}, lowest above {cbm:.3f}"
    if np.any(bands.n_dropped):
        line += (
            f"; overlap directions projected out per k: {int(bands.n_dropped.min())}–"
            f"{int(bands.n_dropped.max())}"
        )
    console.print(line)


def _compare(bands: BandStructure, ref: BandStructure, fermi: float | None) -> str | None:
    """Mean/max |Δε| of the states within ±2 eV of E_F (evaluate's window), bands matched by
    index from the bottom; None for shift-invert windows or without E_F."""
    from training.evaluate import EIGEN_WINDOW_EV

    if fermi is None or "shift-invert" in (bands.solver, ref.solver):
        return None
    n = min(bands.eigenvalues.shape[1], ref.eigenvalues.shape[1])
    a, b = bands.eigenvalues[:, :n], ref.eigenvalues[:, :n]
    window = np.abs(b - fermi) <= EIGEN_WINDOW_EV
    if not window.any():
        return None
    err = np.abs(a - b)[window]
    return (
        f"vs reference: |Δε| mean {1000 * err.mean():.1f} meV, max {1000 * err.max():.1f} meV "
        f"over {err.size} states within ±{EIGEN_WINDOW_EV:g} eV of E_F (bands matched by index "
        "from the bottom)"
    )


def _solve_with_reference(
    args: argparse.Namespace,
    sh: SparseHamiltonian,
    reference: Any,
    kpoints: np.ndarray,
    fermi: float | None,
    source: _Source,
) -> tuple[BandStructure, BandStructure | None]:
    """Bands of ``sh`` and, with ``--reference``, of the reference at the same k points."""
    bands = _solve(
        sh, kpoints, args, fermi, threshold=args.overlap_threshold, what=source.description
    )
    if reference is None:
        return bands, None
    _check_k(kpoints, reference.gamma_only, f"--reference {args.reference}")
    ref_bands = _solve(
        reference.hamiltonian,
        kpoints,
        args,
        fermi,
        threshold=_ref_threshold(args),
        what="reference",
    )
    return bands, ref_bands


def cmd_bands(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)
    if args.path is not None and args.kpoints is not None:
        raise ValueError("give either --path or --kpoints, not both")
    source = _source(args)
    reference = _reference(args.reference, source.hamiltonian)
    sh = _with_overlap(source, reference)
    kpoints, path = _kpoints(args, sh)
    _check_k(kpoints, source.gamma_only, source.description)
    fermi = _fermi(args, source, reference)
    bands, ref_bands = _solve_with_reference(args, sh, reference, kpoints, fermi, source)
    if args.json:
        doc = {"kpoints": kpoints.tolist(), "eigenvalues_eV": bands.eigenvalues.tolist()}
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        _summary(console, bands, fermi, source.description)
        if ref_bands is not None:
            _summary(console, ref_bands, fermi, f"reference {args.reference}")
            comparison = _compare(bands, ref_bands, fermi)
            if comparison:
                console.print(comparison)
    if args.plot:
        x = path.x if path is not None else linear_kpoint_axis(sh.structure, kpoints)
        ref_eig = None
        if ref_bands is not None:
            ref_eig = ref_bands.eigenvalues[:, : bands.eigenvalues.shape[1]]
        title = f"{source.label}: {sh.structure.n_atoms} atoms"
        if args.overlap_threshold is not None:
            title += f", S(k) eigenvalues ≤ {args.overlap_threshold:g} projected out"
            if args.project_reference:
                title += " (both)"
        out = plot_bands(
            Path(args.plot),
            x,
            bands.eigenvalues,
            fermi=fermi,
            special_x=None if path is None else path.special_x,
            labels=None if path is None else path.labels,
            reference=ref_eig,
            ylim=None if args.ylim is None else tuple(args.ylim),
            title=title,
            name=source.label,
            reference_name=f"reference {Path(args.reference).name}" if args.reference else "",
        )
        console.print(f"wrote {out}")
    return 0


# --------------------------------------------------------------------------------------------
# DOS


def _default_mesh(sh: SparseHamiltonian) -> list[int]:
    st = sh.structure
    lengths = np.linalg.norm(st.cell, axis=1)
    return [
        max(1, math.ceil(MESH_LENGTH / lengths[a])) if st.pbc[a] and lengths[a] > 0 else 1
        for a in range(3)
    ]


def plot_dos(
    out: Path,
    energies: np.ndarray,
    dos: np.ndarray,
    *,
    fermi: float | None,
    reference: np.ndarray | None = None,
    title: str = "",
    name: str = "prediction",
    reference_name: str = "reference",
) -> Path:
    """DOS PNG (Agg canvas)."""
    from matplotlib.figure import Figure

    shift = 0.0 if fermi is None else fermi
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.subplots()
    if reference is not None:
        ax.plot(energies - shift, reference, color="black", linewidth=1.2, label=reference_name)
    ax.plot(energies - shift, dos, color="tab:red", linewidth=1.0, label=name)
    ax.set_xlabel("E − E_F (eV)" if fermi is not None else "E (eV)")
    ax.set_ylabel("DOS (states/eV per cell)")
    if fermi is not None:
        ax.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlim(float(energies[0] - shift), float(energies[-1] - shift))
    ax.set_ylim(bottom=0.0)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_png(fig, out)


def cmd_dos(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)
    if not args.sigma > 0:
        raise ValueError(f"--sigma must be > 0 eV, got {args.sigma}")
    if args.npoints < 2:
        raise ValueError(f"--npoints must be ≥ 2, got {args.npoints}")
    source = _source(args)
    reference = _reference(args.reference, source.hamiltonian)
    sh = _with_overlap(source, reference)
    mesh = list(args.kmesh) if args.kmesh is not None else _default_mesh(sh)
    kpoints, weights = kpoint_mesh(sh.structure, mesh)
    _check_k(kpoints, source.gamma_only, source.description)
    fermi = _fermi(args, source, reference)
    bands, ref_bands = _solve_with_reference(args, sh, reference, kpoints, fermi, source)
    shift = 0.0 if fermi is None else fermi
    if args.range is not None:
        lo, hi = (float(v) + shift for v in args.range)
        if not hi > lo:
            raise ValueError(f"--range: {args.range[0]} … {args.range[1]} is empty")
    else:
        eig = bands.eigenvalues
        lo, hi = float(eig.min()) - 5 * args.sigma, float(eig.max()) + 5 * args.sigma
    energies = np.linspace(lo, hi, args.npoints)
    dos = gaussian_dos(bands.eigenvalues, weights, energies, args.sigma)
    ref_dos = (
        None
        if ref_bands is None
        else gaussian_dos(ref_bands.eigenvalues, weights, energies, args.sigma)
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"DOS from {source.description}: Gaussian sigma {args.sigma} eV, k mesh {mesh} "
        f"(Gamma-centred, {len(kpoints)} points), {bands.solver} solver, both spins\n"
        f"E_F {'unknown' if fermi is None else f'{fermi:.6f} eV'}\n"
        "energy_eV  dos_states_per_eV"
        + ("  reference_dos_states_per_eV" if ref_dos is not None else "")
    )
    columns = [energies, dos] + ([ref_dos] if ref_dos is not None else [])
    np.savetxt(out, np.column_stack(columns), fmt="%.8g", header=header)
    if args.json:
        doc = {
            "energies_eV": energies.tolist(),
            "dos_states_per_eV": dos.tolist(),
            "kmesh": mesh,
            "sigma_eV": args.sigma,
            "fermi_energy_eV": fermi,
        }
        if ref_dos is not None:
            doc["reference_dos_states_per_eV"] = ref_dos.tolist()
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        console.print(
            f"{source.description}: DOS on {len(kpoints)} k points (mesh {mesh}), "
            f"{bands.eigenvalues.shape[1]} states per k, sigma {args.sigma} eV"
        )
    console.print(f"wrote {out}")
    if args.plot:
        plot = plot_dos(
            Path(args.plot),
            energies,
            dos,
            fermi=fermi,
            reference=ref_dos,
            title=f"{source.label}: k mesh {mesh}, σ = {args.sigma} eV",
            name=source.label,
            reference_name=f"reference {Path(args.reference).name}" if args.reference else "",
        )
        console.print(f"wrote {plot}")
    return 0


# --------------------------------------------------------------------------------------------
# argparse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        help="bundle directory, run directory or 'default'; or a snapshot/DeepH folder whose "
        "stored blocks are used as they are (then no STRUCTURE)",
    )
    p.add_argument("structure", nargs="?", help="structure file (any ASE format, one frame)")
    p.add_argument(
        "--reference", metavar="FOLDER", help="overlay the stored blocks of a snapshot folder"
    )
    p.add_argument(
        "--fermi-energy", type=float, metavar="EV", help="E_F (default: the folder's stored one)"
    )
    p.add_argument(
        "--solver",
        choices=["auto", "dense", "shift-invert"],
        default="auto",
        help="dense: all eigenvalues; shift-invert: --n-window around --center "
        "(auto: dense up to --dense-limit orbitals)",
    )
    p.add_argument("--dense-limit", type=int, default=DEFAULT_DENSE_LIMIT, metavar="N_ORB")
    p.add_argument(
        "--n-window", type=int, default=DEFAULT_N_WINDOW, help="eigenvalues per k (shift-invert)"
    )
    p.add_argument(
        "--center", type=float, metavar="EV", help="centre of the shift-invert window (default E_F)"
    )
    p.add_argument(
        "--overlap-threshold",
        type=float,
        metavar="THR",
        help="project out S(k) eigenvectors with eigenvalue ≤ THR (canonical orthogonalisation; "
        "for a predicted S that is not positive definite; dense solver)",
    )
    p.add_argument(
        "--project-reference",
        action="store_true",
        help="apply --overlap-threshold to the --reference blocks too (compare in the same "
        "subspace; by default the reference is solved exactly)",
    )


def register_bands(sub: Any) -> None:
    """Add ``bands`` to the ``gears_h`` subparsers."""
    b = sub.add_parser("bands", help="band structure from predicted (or stored) H(k), S(k)")
    _common(b)
    b.add_argument("--path", help="special points, e.g. GMKG (ASE bandpath of the cell)")
    b.add_argument(
        "--kpoints", help="explicit reduced k points 'kx ky kz; kx ky kz; ...' (instead of --path)"
    )
    b.add_argument("--npoints", type=int, default=100, help="k points along --path")
    b.add_argument(
        "--lattice-tolerance",
        type=float,
        help="ASE lattice-recognition tolerance for --path labels (default: increase until "
        "the labels exist, e.g. a strained hexagonal cell still has M and K)",
    )
    b.add_argument("--plot", metavar="PNG", help="write a band plot")
    b.add_argument(
        "--ylim", type=float, nargs=2, metavar=("EMIN", "EMAX"), help="plot window (eV, from E_F)"
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=cmd_bands)


def register_dos(sub: Any) -> None:
    """Add ``dos`` to the ``gears_h`` subparsers."""
    d = sub.add_parser("dos", help="density of states (Gaussian smearing) on a k mesh")
    _common(d)
    d.add_argument(
        "--kmesh",
        type=int,
        nargs=3,
        metavar=("N1", "N2", "N3"),
        help=f"Γ-centred k mesh (default: about {MESH_LENGTH:g} Å per periodic axis)",
    )
    d.add_argument("--sigma", type=float, default=0.1, help="Gaussian width (eV)")
    d.add_argument("--npoints", type=int, default=2001, help="energy grid points")
    d.add_argument(
        "--range",
        type=float,
        nargs=2,
        metavar=("EMIN", "EMAX"),
        help="energy window (eV, from E_F when known; default: the whole spectrum)",
    )
    d.add_argument("-o", "--output", default="dos.dat", help="data file (text columns)")
    d.add_argument("--plot", metavar="PNG", help="write a DOS plot")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.set_defaults(func=cmd_dos)
