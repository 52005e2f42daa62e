"""Learning curves and throughput of training runs -> tables (stdout) and bench/RESULTS.md.

Reads ``metrics.jsonl`` of each run directory (written by ``gears_h train``) and prints the
validation MAE against wall time, the throughput (structures/s, steps/s) and the time to
reach given MAE levels. With ``--write`` the tables replace the section of this run's name
in ``bench/RESULTS.md`` (machine, command and date included).

    uv run python bench/training_report.py runs/bench_hbn_20min --title "h-BN, 20 min" --write
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from results_file import publish


def read_metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    return sorted(rows, key=lambda r: r["epoch"])


def report(run_dir: Path, title: str, levels: list[float]) -> str:
    rows = read_metrics(run_dir)
    val = [r for r in rows if "val_mae_meV" in r]
    lines = [f"### {title}", ""]
    lines.append(f"run directory `{run_dir}`; {len(rows)} epochs, last step {rows[-1]['step']}.")
    lines.append("")
    # runs with the eigenbasis loss also validate eigenvalues (window of `gears_h evaluate`)
    eig = any("val_eig_mae_meV" in r for r in val)
    head = "| wall (min) | epoch | val H MAE (meV) | on-site | hopping | val S MAE |"
    lines.append(head + (" val eigenvalue MAE (meV) |" if eig else ""))
    lines.append("|---:|---:|---:|---:|---:|---:|" + ("---:|" if eig else ""))
    # a readable curve: about 12 rows spread over the run, always the last one
    pick = val[:: max(1, len(val) // 12)]
    if val and pick[-1] is not val[-1]:
        pick.append(val[-1])
    for r in pick:
        lines.append(
            f"| {r['wall_s'] / 60:.1f} | {r['epoch']} | {r['val_mae_meV']:.2f} | "
            f"{r['val_onsite_mae_meV']:.2f} | {r['val_hopping_mae_meV']:.2f} | "
            f"{r.get('val_s_mae', float('nan')):.2e} |"
            + (f" {r.get('val_eig_mae_meV', float('nan')):.1f} |" if eig else "")
        )
    best = min(val, key=lambda r: r["val_mae_meV"]) if val else None
    steady = rows[1:] or rows
    sps = sum(r["structures_per_s"] for r in steady) / len(steady)
    steps_s = sum(
        (b["step"] - a["step"]) / b["train_time_s"] for a, b in itertools.pairwise(rows)
    ) / max(len(rows) - 1, 1)
    lines.append("")
    if best:
        lines.append(
            f"best validation H MAE **{best['val_mae_meV']:.2f} meV** at epoch {best['epoch']} "
            f"({best['wall_s'] / 60:.1f} min)."
        )
    lines.append(
        f"throughput (epochs after the first): {sps:.2f} structures/s, {steps_s:.2f} steps/s."
    )
    for level in levels:
        hit = next((r for r in val if r["val_mae_meV"] <= level), None)
        when = f"{hit['wall_s'] / 60:.1f} min (epoch {hit['epoch']})" if hit else "not reached"
        lines.append(f"time to {level:g} meV: {when}.")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--title", default="Training", help="RESULTS.md section title")
    p.add_argument("--levels", type=float, nargs="*", default=[30.0, 10.0, 6.0, 2.0, 1.0])
    p.add_argument("--note", default="", help="text put before the tables")
    p.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = p.parse_args()
    parts = [report(d, d.name, args.levels) for d in args.run_dirs]
    publish(args.title, args.note, parts, "training_report.py", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
