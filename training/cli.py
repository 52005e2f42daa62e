"""The ``gears_h`` command line.

Every command has ``--help``; bad input exits with status 2 and a one-line reason on stderr
(no traceback). Commands: ``template``, ``validate``, ``analyze``, ``train``, ``export``,
``infer``, ``evaluate``, ``datagen`` (DFT data from PySCF / GPAW, extra ``[dft]``), ``bands``
and ``dos`` (electronic structure from predicted H(k), S(k)). A MODEL argument is a bundle
directory, a training run directory (exported on the fly from its best checkpoint) or
``default`` (the bundle shipped in the package).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _load_config(path: Path):  # -> Config
    import yaml
    from pydantic import ValidationError

    from training.config import Config

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CliError(f"{path}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from exc
    try:
        return Config.model_validate(data or {})
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"{path}: {errors}") from exc


def cmd_template(args: argparse.Namespace) -> int:
    from training.template import render_template

    name = "config_full.yaml" if args.full else "config.yaml"
    out = Path(args.output or name)
    if out.exists() and not args.force:
        raise CliError(f"{out}: exists (use --force to overwrite)")
    out.write_text(render_template(full=args.full))
    print(f"wrote {out}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import yaml

    config = _load_config(Path(args.config))
    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from training.analysis import analyze
    from training.data.snapshot import read_dataset

    dataset = Path(args.dataset)
    structures = read_dataset(dataset, limit=args.n)
    if not structures:
        raise CliError(f"{dataset}: no snapshot folders found")
    result = analyze(structures, edge_cutoff=args.edge_cutoff)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"analysis_{dataset.resolve().name}.json"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result.to_json()) + "\n")
    tmp.replace(out)
    console = Console(soft_wrap=True)
    table = Table(title=f"{dataset} — {result.n_structures} structures")
    for col in ("species pair", "rows", "cutoff (Å)", "mean |H| (eV)"):
        table.add_column(col)
    for (a, b), rc in sorted(result.pair_cutoff.items()):
        key = f"{a}-{b}"
        table.add_row(
            key,
            str(result.pair_rows.get(key, 0)),
            f"{rc:.2f}",
            f"{result.block_stats.get(key, {}).get('mean_abs_eV', 0.0):.4g}",
        )
    console.print(table)
    console.print(
        f"species {list(result.species)}, basis {result.basis.to_json_dict()}, "
        f"avg neighbours within {result.edge_cutoff} Å: {result.avg_num_neighbors:.1f}"
    )
    console.print(f"wrote {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from training.run import train

    config = _load_config(Path(args.config))
    console = Console(soft_wrap=True)

    def log(m: dict) -> None:
        parts = [f"epoch {m['epoch']:4d}", f"loss {m['train_loss']:.4g}"]
        if "val_mae_meV" in m:
            parts.append(
                f"val MAE H {m['val_mae_meV']:.3f} meV (on-site {m['val_onsite_mae_meV']:.3f}, "
                f"hopping {m['val_hopping_mae_meV']:.3f})"
            )
        if "val_s_mae" in m:
            parts.append(f"S {m['val_s_mae']:.2e}")
        parts.append(f"{m['structures_per_s']:.2f} struct/s")
        console.print(" | ".join(parts))

    train(config, resume=args.resume, log=log)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.export import export_run

    run_dir = Path(args.run_dir)
    out = Path(args.output) if args.output else run_dir / "bundle"
    path = export_run(
        run_dir, out, checkpoint=args.checkpoint, max_atoms=args.max_atoms, name=args.name
    )
    print(f"wrote {path}")
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    import tempfile

    from rich.console import Console
    from rich.table import Table

    from gears_h_core.io import exporters
    from gears_h_core.io.structures import read_structure_files

    per_file = [(f, read_structure_files([f])) for f in args.structures]
    structures = [s for _, frames in per_file for s in frames]
    with tempfile.TemporaryDirectory() as tmp:
        from training.export import default_cache_dir, load_predictor

        cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
        predictor = load_predictor(args.model, Path(tmp), cache_dir)
        for f, frames in per_file:  # unknown species fail before any compilation
            for k, s in enumerate(frames):
                try:
                    predictor.check_species(s)
                except ValueError as exc:
                    where = f if len(frames) == 1 else f"{f} frame {k}"
                    raise CliError(f"{where}: {exc}") from exc
        results = []
        for s in structures:  # one at a time: identical to a lone POST /infer
            results.extend(predictor.predict([s], overlap=not args.no_overlap))
    console = Console(stderr=True, soft_wrap=True)
    if args.output:
        out = Path(args.output)
        from training.interop import interop_kind, write_interop

        kind = exporters.output_kind(out)
        interop = interop_kind(out, args.format)
        if interop is not None:
            written, notes = write_interop(
                interop, results, out, predictor.model_info, fermi_energy=args.fermi_energy
            )
            for note in notes:
                console.print(note)
        elif kind == "msgpack":
            written = [exporters.write_msgpack(results, predictor.model_info, out)]
        elif kind == "npz":
            written = exporters.write_csr_npz(results, out)
        else:
            written = exporters.write_snapshot_folders(results, predictor.model_info, out)
        for w in written:
            console.print(f"wrote {w}")
    table = Table(title=f"model {predictor.bundle.name} ({predictor.compile_count} compilations)")
    for col in ("structure", "atoms", "orbitals", "hopping blocks", "shifts", "max |H| (eV)"):
        table.add_column(col)
    for k, sh in enumerate(results):
        hop = sum(len(g.i) for g in sh.H.hopping)
        shifts = {tuple(x) for g in sh.H.hopping for x in g.shift.tolist()}
        hmax = max(float(abs(g.blocks).max()) for g in (*sh.H.onsite, *sh.H.hopping))
        n_orb = int(sh.basis.orbital_offsets(sh.structure.numbers)[-1])
        table.add_row(
            str(k), str(sh.structure.n_atoms), str(n_orb), str(hop), str(len(shifts)), f"{hmax:.3f}"
        )
    console.print(table)
    return 0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def cmd_evaluate(args: argparse.Namespace) -> int:
    import tempfile

    from training.data.snapshot import read_dataset
    from training.evaluate import evaluate_predictions

    dataset = Path(args.dataset)
    labeled = read_dataset(dataset, limit=args.n)
    if not labeled:
        raise CliError(f"{dataset}: no snapshot folders found")
    with tempfile.TemporaryDirectory() as tmp:
        from training.export import default_cache_dir, load_predictor

        predictor = load_predictor(args.model, Path(tmp), default_cache_dir())
        for s in labeled:
            try:
                predictor.check_species(s.hamiltonian.structure)
            except ValueError as exc:
                raise CliError(f"{s.path}: {exc}") from exc
        pairs = [(predictor.predict([s.hamiltonian.structure])[0], s) for s in labeled]
    result = evaluate_predictions(pairs, overlap_threshold=args.overlap_threshold)
    result["model"] = {
        "name": predictor.bundle.name,
        "sha256": predictor.bundle.sha256,
    }
    result["dataset"] = str(dataset)
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    h = result["H"]
    table = Table(title=f"{dataset}: {result['n_structures']} structures, model {args.model}")
    table.add_column("quantity")
    table.add_column("value")
    for key in ("mae_meV", "rmse_meV", "max_meV", "onsite_mae_meV", "hopping_mae_meV"):
        table.add_row(f"H {key}", f"{h[key]:.4g}")
    if result["S"] is not None:
        table.add_row("S mae", f"{result['S']['mae']:.3e}")
        table.add_row("S max", f"{result['S']['max']:.3e}")
    eig = result["eigenvalues"]
    if eig is not None:
        mae = eig["mae_meV_within_2eV_of_ef"]
        table.add_row("eigenvalues MAE (±2 eV of E_F), meV", "—" if mae is None else f"{mae:.4g}")
        if eig["failed"]:
            table.add_row("S(k) not positive definite", ", ".join(eig["failed"]))
    for key, v in result["per_species_pair"].items():
        table.add_row(f"{key} H mae_meV", f"{v['H_mae_meV']:.4g}")
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gears_h", description="GEARS H: train and run ML Hamiltonians"
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("template", help="write an annotated config file")
    t.add_argument("kind", choices=["train"])
    t.add_argument("--full", action="store_true", help="all options (config_full.yaml)")
    t.add_argument("-o", "--output", help="output path")
    t.add_argument("--force", action="store_true", help="overwrite an existing file")
    t.set_defaults(func=cmd_template)

    v = sub.add_parser("validate", help="validate a config and print it resolved")
    v.add_argument("config")
    v.set_defaults(func=cmd_validate)

    a = sub.add_parser("analyze", help="analyse a data set (JSON to the output dir)")
    a.add_argument("dataset")
    a.add_argument("n", nargs="?", type=int, default=None, help="first N structures")
    a.add_argument("--edge-cutoff", type=float, default=5.0)
    a.add_argument("--output-dir", default="cache", help="where the JSON goes (never the data)")
    a.set_defaults(func=cmd_analyze)

    tr = sub.add_parser("train", help="train a model")
    tr.add_argument("config")
    tr.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    tr.set_defaults(func=cmd_train)

    ex = sub.add_parser("export", help="write the model bundle of a training run")
    ex.add_argument("run_dir")
    ex.add_argument("-o", "--output", help="bundle directory (default RUN_DIR/bundle)")
    ex.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    ex.add_argument(
        "--max-atoms", type=int, default=512, help="largest padding bucket (atoms per batch)"
    )
    ex.add_argument("--name", help="model name (default: the config's name)")
    ex.set_defaults(func=cmd_export)

    inf = sub.add_parser("infer", help="predict H (and S) for structure files")
    inf.add_argument("model", help="bundle directory, run directory or 'default'")
    inf.add_argument("structures", nargs="+", help="any ASE-readable file (multi-frame too)")
    inf.add_argument(
        "-o", "--output", help="x.msgpack (wire format), x.npz (CSR per shift) or a folder"
    )
    inf.add_argument("--no-overlap", action="store_true", help="H only")
    inf.add_argument(
        "--format",
        choices=["auto", "deeph"],
        default="auto",
        help="deeph: one DeepH directory per structure under -o DIR (auto: by suffix; "
        ".TSHS/.nc write a sisl Hamiltonian)",
    )
    inf.add_argument(
        "--fermi-energy", type=float, metavar="EV", help="fermi_energy_eV of DeepH output"
    )
    inf.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="keep compiled networks here between runs (default $GEARS_H_CACHE_DIR, else "
        "$XDG_CACHE_HOME/gears_h; GEARS_H_CACHE_DIR=off disables)",
    )
    inf.add_argument("--no-cache", action="store_true", help="compile every time, keep nothing")
    inf.set_defaults(func=cmd_infer)

    ev = sub.add_parser("evaluate", help="errors of a model on a data set")
    ev.add_argument("model", help="bundle directory, run directory or 'default'")
    ev.add_argument("dataset")
    ev.add_argument("n", nargs="?", type=int, default=None, help="first N structures")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument(
        "--overlap-threshold",
        type=_positive_float,
        default=None,
        metavar="THR",
        help="compare eigenvalues in the subspace of the reference S(k) eigenvectors above "
        "THR (nearly linearly dependent bases, e.g. 1e-3 for h-BN dzp); default: full basis",
    )
    ev.set_defaults(func=cmd_evaluate)
    from training.datagen.command import register_datagen

    register_datagen(sub)
    from training.electronic import register_bands, register_dos

    register_bands(sub)
    register_dos(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"gears_h: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"gears_h: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
