"""Offline helpers of the deployment tests: render the Helm chart, pick objects out of the
rendered manifests, parse the Dockerfiles. No cluster, no Docker engine, no network."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "gears-h"
YAMLLINT_CONFIG = ROOT / "helm" / ".yamllint.yaml"
DOCKER = ROOT / "docker"
KUBE_VERSION = "1.30.0"
RELEASE = "rel"
NAMESPACE = "gears"
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"

# The values sets every check runs on: the chart's defaults and each file in ci/
# (chart-testing convention: ci/*-values.yaml).
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
VALUES_IDS = ["default", *(p.name.removesuffix("-values.yaml") for p in CI_VALUES)]


def load_values(values_id: str) -> dict[str, Any]:
    """The override values of one values set ({} for the chart's defaults)."""
    if values_id == "default":
        return {}
    data = yaml.safe_load((CHART / "ci" / f"{values_id}-values.yaml").read_text())
    return data or {}


@dataclass
class Rendered:
    """One rendered release: the manifests by template path and the parsed objects."""

    files: dict[str, str]
    objects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def notes(self) -> str:
        return next((text for path, text in self.files.items() if path.endswith("NOTES.txt")), "")

    def kinds(self) -> list[str]:
        return sorted(obj["kind"] for obj in self.objects)

    def one(self, kind: str, *, hook: str | None = None) -> dict[str, Any]:
        found = self.all(kind, hook=hook)
        assert len(found) == 1, f"expected one {kind} (hook={hook}), got {len(found)}"
        return found[0]

    def all(self, kind: str, *, hook: str | None = None) -> list[dict[str, Any]]:
        return [
            obj
            for obj in self.objects
            if obj["kind"] == kind
            and obj["metadata"].get("annotations", {}).get("helm.sh/hook") == hook
        ]

    def server_container(self) -> dict[str, Any]:
        pod = self.one("Deployment")["spec"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == "gearsh-serve"]
        return container


def render(values: dict[str, Any] | None = None, *, api_versions: tuple[str, ...] = ()) -> Rendered:
    """Render the chart offline as ``helm template`` would, for Kubernetes ``KUBE_VERSION``.

    helm-python-sdk's ``Chart.render`` does not expose the capabilities options (kube version,
    extra API versions such as the ServiceMonitor CRD) that its native render call takes, so
    the call is made directly with them.
    """
    import helm_python
    from helm_python import _native

    opts = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "is_install": True,
        "kube_version": f"v{KUBE_VERSION}",
        "api_versions": list(api_versions),
    }
    with helm_python.Chart.load(CHART) as chart:
        raw = _native.call_string(
            "helm_render",
            chart._raw(),
            json.dumps(values) if values else None,
            json.dumps(opts),
        )
    files: dict[str, str] = json.loads(raw)
    rendered = Rendered(files)
    for path, text in sorted(files.items()):
        if path.endswith(".txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {})
                rendered.objects.append(doc)
    return rendered


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Environment entries of a container by name (each entry as rendered)."""
    entries = container.get("env", [])
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate environment variables: {names}"
    return {e["name"]: e for e in entries}


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: int(p["containerPort"]) for p in container.get("ports", [])}


# -- Dockerfiles ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # continuation lines joined
    stage: int  # index of the FROM it belongs to (-1: before the first FROM)


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, backslash continuations joined."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, " ".join(args.split()), stage))
    assert not pending, f"{path}: dangling line continuation"
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def env_assignments(instructions: list[Instruction]) -> dict[str, str]:
    """``ENV`` key=value pairs (later ones win); ``${PATH}``-style values kept verbatim."""
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for token in shlex.split(ins.args):
                key, sep, value = token.partition("=")
                assert sep, f"ENV without '=' (legacy form): {ins.args}"
                env[key] = value
    return env


def json_form(args: str) -> list[str]:
    """An exec-form argument list (``["a", "b"]``)."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def healthcheck_command(instructions: list[Instruction]) -> list[str]:
    (check,) = [i for i in instructions if i.keyword == "HEALTHCHECK"]
    match = re.search(r"\bCMD (\[.*\])$", check.args)
    assert match, f"HEALTHCHECK must use the exec form: {check.args}"
    return json_form(match.group(1))


def dockerignore_patterns(dockerfile: Path) -> list[str]:
    """Patterns of ``<Dockerfile>.dockerignore`` (BuildKit's per-Dockerfile ignore file)."""
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore.is_file(), f"{ignore} is missing"
    return [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


# -- the service's side of the contract -----------------------------------------------------------

# Variables outside GEARS_H_* that deployment files may set, each with the service function
# that reads it (checked against that function's source, so a rename is noticed).
RUNTIME_ENV = {"XLA_PYTHON_CLIENT_MEM_FRACTION": "service.engine:configure_jax"}


def setting_env_names() -> dict[str, str]:
    """``GEARS_H_<FIELD>`` -> field name, for every field of `service.settings.Settings`."""
    from service.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    assert prefix == "GEARS_H_", prefix
    return {f"{prefix}{name}".upper(): name for name in Settings.model_fields}


def setting_default(name: str) -> Any:
    from service.settings import Settings

    return Settings.model_fields[name].get_default(call_default_factory=True)


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regular expression."""
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
            i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether BuildKit leaves ``path`` (relative, ``/``-separated) out of the context: the
    last pattern that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        regex = _ignore_regex(pattern.strip("/"))
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded
