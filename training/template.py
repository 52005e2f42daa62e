"""Render an annotated YAML training config from the pydantic models (cannot drift)."""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml
from pydantic import BaseModel

from training.config import Config

# fields shown in the short template; --full shows every field
_SHORT = {
    "run_dir",
    "name",
    "data",
    "train",
    "valid",
    "model",
    "edge_cutoff",
    "n_interactions",
    "training",
    "epochs",
    "max_minutes",
    "batch_size",
    "seed",
}


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _fields(obj: Any) -> list[tuple[str, Any, str]]:
    if isinstance(obj, BaseModel):
        out = []
        for name, info in type(obj).model_fields.items():
            out.append((name, getattr(obj, name), info.description or ""))
        return out
    if dataclasses.is_dataclass(obj):
        return [
            (f.name, getattr(obj, f.name), f.metadata.get("description", ""))
            for f in dataclasses.fields(obj)
        ]
    return []


def _render(obj: Any, indent: int, full: bool, lines: list[str]) -> None:
    pad = "  " * indent
    for name, value, desc in _fields(obj):
        if not full and name not in _SHORT:
            continue
        if desc:
            lines.append(f"{pad}# {desc}")
        if isinstance(value, BaseModel) or dataclasses.is_dataclass(value):
            lines.append(f"{pad}{name}:")
            _render(value, indent + 1, full, lines)
        else:
            if isinstance(value, list):
                value = [str(v) for v in value]
            elif value is not None and not isinstance(value, (int, float, str, bool)):
                value = str(value)
            lines.append(f"{pad}{name}: {_scalar(value)}")


def render_template(full: bool = False) -> str:
    lines = ["# gears_h training config (generated from the config models)"]
    _render(Config(), 0, full, lines)
    return "\n".join(lines) + "\n"
