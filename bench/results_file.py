"""bench/RESULTS.md: one section per benchmark, each with machine, command and date.

Shared by the bench scripts (``from results_file import write_section``; they run as
``python bench/<script>.py``, so this folder is on ``sys.path``).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section: machine, command, date, then the figures.\n"


def machine() -> str:
    """CPU model, core count, OS and the current load average (these machines are shared)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpus = accelerators()
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        + (f"{gpus}, " if gpus else "")
        + f"load average {load:.1f} at the end"
    )


def accelerators() -> str:
    """NVIDIA GPUs as ``nvidia-smi`` names them (``2 x NVIDIA H100 80GB HBM3``), or ``""``."""
    if shutil.which("nvidia-smi") is None:
        return ""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    names = [n.strip() for n in out.splitlines() if n.strip()]
    if not names:
        return ""
    return f"{len(names)} x {names[0]}" if len(set(names)) == 1 else ", ".join(names)


def command_line(script: str, args: Sequence[str]) -> str:
    """``uv run python bench/<script> ARGS`` as run, with a ``--note`` text shown as "…" (the
    note is printed in the section itself; the command stays short)."""
    shown = list(args)
    if "--note" in shown:
        k = shown.index("--note")
        shown[k : k + 2] = ["--note", "…"]
    return " ".join(["uv run python", f"bench/{script}", *(shlex.quote(a) for a in shown)])


def publish(title: str, note: str, parts: Sequence[str], script: str, write: bool) -> None:
    """Print ``note`` and the tables ``parts``; with ``write`` also as the RESULTS.md section
    ``title``, with the command line of ``bench/<script>`` as run."""
    body = (note + "\n\n" if note else "") + "\n".join(parts)
    print(body)
    if write:
        write_section(title, body, command_line(script, sys.argv[1:]))


def write_section(title: str, body: str, command: str) -> None:
    """Replace (or append) the ``## title`` section of RESULTS.md, atomically."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"## {title}\n\nmachine: {machine()}  \ncommand: `{command}`  \ndate: {stamp}\n\n"
        f"{body.strip()}\n\n"
    )
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    text = text.rstrip("\n") + "\n"
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(RESULTS)
