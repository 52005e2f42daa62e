"""The Dockerfiles, without a Docker engine (SPEC §9): hadolint, then what the images promise
(multi-stage, ``uv sync --frozen`` with the right extras, the project installed as a wheel with
its default model, a non-root user, the entry point, ports, health check, cache volume) and
their drift from the service and the project (settings, routes, scripts, packages)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from deploy_kit import (
    CHART,
    DOCKER,
    ROOT,
    RUNTIME_ENV,
    Instruction,
    dockerignore_excludes,
    dockerignore_patterns,
    env_assignments,
    final_stage,
    healthcheck_command,
    json_form,
    parse_dockerfile,
    setting_default,
    setting_env_names,
)
from optional_tools import require_executable

from service.main import create_app
from service.routes import v2
from service.settings import Settings

SERVE = DOCKER / "serve.Dockerfile"
TRAIN = DOCKER / "train.Dockerfile"
DOCKERFILES = [SERVE, TRAIN]
# Image-level variables that are not service settings.
IMAGE_ENV = {
    "PATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "NVIDIA_DRIVER_CAPABILITIES",
}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _ready_path() -> str:
    app = create_app(Settings(model="default", grpc_port=0, compilation_cache_dir=None))
    return app.url_path_for(v2.ready.__name__)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_ids(DOCKERFILES))
def test_hadolint(dockerfile: Path) -> None:
    hadolint = require_executable("hadolint")
    proc = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_is_not_vacuous(tmp_path: Path) -> None:
    hadolint = require_executable("hadolint")
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /src && pip install .\n")
    proc = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, timeout=60)
    assert proc.returncode != 0


# -- build stage: uv sync --frozen, extras, the project as a wheel --------------------------------


def _uv_syncs(instructions: list[Instruction]) -> list[str]:
    return [i.args for i in instructions if i.keyword == "RUN" and "uv sync" in i.args]


@pytest.mark.parametrize(
    ("dockerfile", "extras"),
    [(SERVE, {"serve", "cuda"}), (TRAIN, {"train", "cuda", "dft"})],
    ids=_ids(DOCKERFILES),
)
def test_multi_stage_frozen_uv_sync(dockerfile: Path, extras: set[str]) -> None:
    instructions = parse_dockerfile(dockerfile)
    froms = [i.args for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 3, froms  # uv binary, build, runtime
    assert not froms[-1].endswith((" AS build", " AS uv")), "the runtime is a fresh stage"
    syncs = _uv_syncs(instructions)
    assert len(syncs) == 2, syncs  # dependencies first (cached layer), then the project
    for args in syncs:
        assert "uv sync --frozen --no-dev" in args
        assert "--no-editable" in args  # the venv holds the package, not a link into /src
    assert "--no-install-project" in syncs[0]
    used = set(re.findall(r"--extra (\w+)", " ".join(syncs)))
    assert used == extras
    assert used <= set(PYPROJECT["project"]["optional-dependencies"])
    run = " ".join(syncs)
    assert "cpu)" in run or '"${VARIANT}" = cuda' in run  # the CPU variant drops [cuda]
    assert any(i.keyword == "ARG" and i.args == "VARIANT=cuda" for i in instructions)
    env = env_assignments([i for i in instructions if i.stage == 1])
    assert env["UV_PYTHON_DOWNLOADS"] == "never" and env["UV_PROJECT_ENVIRONMENT"] == "/opt/venv"
    runtime = final_stage(instructions)
    copies = [i.args for i in runtime if i.keyword == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_ids(DOCKERFILES))
def test_build_context_holds_the_project(dockerfile: Path) -> None:
    """What the build copies is what a wheel of the project needs, and the per-Dockerfile
    .dockerignore lets exactly that in (the default bundle included)."""
    instructions = parse_dockerfile(dockerfile)
    sources: set[str] = set()
    for ins in instructions:
        if ins.keyword == "COPY" and not ins.args.startswith("--from"):
            *srcs, _dest = ins.args.split()
            sources.update(srcs)
        if ins.keyword == "RUN":
            sources.update(re.findall(r"type=bind,source=([^,\s]+)", ins.args))
    packages = set(PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    assert packages | {"pyproject.toml", "uv.lock", PYPROJECT["project"]["readme"]} == sources
    patterns = dockerignore_patterns(dockerfile)
    assert patterns[0] == "*", "allow-list: everything else stays out"
    for source in sorted(sources):
        assert not dockerignore_excludes(patterns, source), source
    default_model = ROOT / "gears_h_core" / "models" / "default"
    shipped = [p for p in default_model.iterdir() if p.is_file()]
    assert (default_model / "manifest.json") in shipped
    for path in [*shipped, *(ROOT / "service").rglob("*.proto")]:
        assert not dockerignore_excludes(patterns, path.relative_to(ROOT).as_posix()), path
    for path in ("tests/core", "bench/RESULTS.md", ".venv/bin/python", "runs/x", ".git/HEAD"):
        assert dockerignore_excludes(patterns, path), path
    assert dockerignore_excludes(patterns, "service/__pycache__/main.cpython-312.pyc")


# -- runtime stage: user, entry point, environment, ports, health check, cache -------------------


@pytest.mark.parametrize(
    ("dockerfile", "script"), [(SERVE, "gearsh-serve"), (TRAIN, "gears_h")], ids=_ids(DOCKERFILES)
)
def test_runtime_non_root_entrypoint(dockerfile: Path, script: str) -> None:
    runtime = final_stage(parse_dockerfile(dockerfile))
    (user,) = [i.args for i in runtime if i.keyword == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: runAsNonRoot can verify it
    (entrypoint,) = [json_form(i.args) for i in runtime if i.keyword == "ENTRYPOINT"]
    assert entrypoint == [script]
    assert script in PYPROJECT["project"]["scripts"]
    env = env_assignments(runtime)
    assert env["PATH"].startswith("/opt/venv/bin:")
    fraction = float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"])
    assert 0 < fraction <= 1
    # GPUs only when asked for (--gpus, the device plugin): a CPU pod on a GPU node whose
    # default runtime is nvidia would otherwise see every GPU.
    assert "NVIDIA_VISIBLE_DEVICES" not in env


def test_serve_env_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_assignments(final_stage(parse_dockerfile(SERVE)))
    names = setting_env_names()
    unknown = [k for k in env if k not in names and k not in RUNTIME_ENV and k not in IMAGE_ENV]
    assert not unknown, f"not settings of service/settings.py: {unknown}"
    for name in [n for n in os.environ if n.upper().startswith("GEARS_H_")]:
        monkeypatch.delenv(name)
    for key, value in env.items():
        if key.startswith("GEARS_H_"):
            monkeypatch.setenv(key, value)
    settings = Settings()  # the image's values are valid settings
    assert settings.host == "0.0.0.0"  # reachable through the published ports
    assert settings.model == "default"  # the bundle inside the package


def test_serve_ports_and_cache_volume() -> None:
    runtime = final_stage(parse_dockerfile(SERVE))
    exposed = {int(p) for i in runtime if i.keyword == "EXPOSE" for p in i.args.split()}
    assert exposed == {setting_default("port"), setting_default("grpc_port")}
    (volume,) = [json_form(i.args) for i in runtime if i.keyword == "VOLUME"]
    cache = env_assignments(runtime)["GEARS_H_COMPILATION_CACHE_DIR"]
    assert volume == [cache]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["compilationCache"]["path"] == cache  # the chart mounts the same folder
    run = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert f"mkdir -p {cache}" in run and "chown -R gearsh:gearsh" in run


def _run_healthcheck(command: list[str], statuses: dict[str, int]) -> int:
    """Exit status of the HEALTHCHECK command against a stand-in server on GEARS_H_PORT that
    answers ``statuses[path]`` (404 elsewhere)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(statuses.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert command[0] == "python"
        proc = subprocess.run(
            [sys.executable, *command[1:]],
            env={"GEARS_H_PORT": str(server.server_address[1])},
            capture_output=True,
            timeout=30,
        )
    finally:
        server.shutdown()
        server.server_close()
    return proc.returncode


def test_serve_healthcheck_asks_ready() -> None:
    """The HEALTHCHECK command itself, run here: healthy on 200 from the ready route,
    unhealthy on 503 (warming up, draining) or when that route is missing."""
    runtime = final_stage(parse_dockerfile(SERVE))
    (check,) = [i.args for i in runtime if i.keyword == "HEALTHCHECK"]
    start_period = re.search(r"--start-period=(\d+)m", check)
    assert start_period and int(start_period.group(1)) >= 5  # cold JIT warm-up
    command = healthcheck_command(runtime)
    ready = _ready_path()
    assert _run_healthcheck(command, {ready: 200}) == 0
    assert _run_healthcheck(command, {ready: 503}) != 0
    assert _run_healthcheck(command, {"/somewhere/else": 200}) != 0


def test_serve_default_port_in_healthcheck() -> None:
    command = " ".join(healthcheck_command(final_stage(parse_dockerfile(SERVE))))
    assert f"'GEARS_H_PORT', '{setting_default('port')}'" in command
    assert _ready_path() in command
