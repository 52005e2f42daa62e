"""The ``gears_h`` command line.

Every command has ``--help``; bad input exits with status 2 and a one-line reason on stderr
(no traceback). Commands available now: ``template``, ``validate``, ``analyze``, ``train``.
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
    console = Console()
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
    console = Console()

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
