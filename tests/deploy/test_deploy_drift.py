"""Drift between the deployment files and the service (SPEC §8, §9): every environment
variable the chart sets is a real ``GEARS_H_*`` setting with a valid value; probe, test and
scrape paths are routes of the FastAPI app (asked in-process, no model loaded) with the
meaning the chart gives them; container ports are the ports the settings make the server
bind; the chart's defaults are the service's defaults."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
from collections.abc import Callable
from typing import Any, get_args

import httpx
import pytest
from deploy_kit import (
    CHART,
    RUNTIME_ENV,
    VALUES_IDS,
    Rendered,
    container_ports,
    env_of,
    load_values,
    setting_default,
    setting_env_names,
)

from service.main import create_app
from service.routes import metrics as metrics_routes
from service.routes import v2
from service.settings import LogLevel, Settings

# Settings a release must not set through server.env, and why.
NOT_FOR_CHART = {
    "GEARS_H_GPU_MEMORY_FRACTION": "one knob for one thing: "
    "the chart sets XLA_PYTHON_CLIENT_MEM_FRACTION from gpu.memoryFraction",
    "GEARS_H_DEBUG_DELAY_MS": "tests only",
}


@pytest.fixture(scope="module")
def app_routes() -> dict[Callable[..., Any], str]:
    """Path of the health and metrics routes of the app ``gearsh-serve`` runs, by endpoint
    (Starlette's reverse lookup by route name, which walks included routers)."""
    app = create_app(Settings(model="default", grpc_port=0, compilation_cache_dir=None))
    return {
        endpoint: app.url_path_for(endpoint.__name__)
        for endpoint in (v2.ready, v2.live, metrics_routes.metrics)
    }


def _get(path: str) -> httpx.Response:
    """GET ``path`` from an app without its lifespan: it answers, but never becomes ready."""
    app = create_app(Settings(model="default", grpc_port=0, compilation_cache_dir=None))

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pod") as client:
            return await client.get(path)

    return asyncio.run(call())


def _settings_from(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The `Settings` the server would read from the container's environment."""
    for name in list(os.environ):
        if name.upper().startswith("GEARS_H_"):
            monkeypatch.delenv(name)
    for name, entry in env_of(container).items():
        if name.startswith("GEARS_H_"):
            value = entry["value"] if "value" in entry else "from-a-secret"
            monkeypatch.setenv(name, value)
    return Settings()


# -- environment -----------------------------------------------------------------------------------


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_every_env_var_is_a_service_setting(values_id: str, releases: dict[str, Rendered]) -> None:
    settings_env = setting_env_names()
    pod = releases[values_id].one("Deployment")["spec"]["template"]["spec"]
    names = set(env_of(releases[values_id].server_container()))
    unknown = sorted(n for n in names if n not in settings_env and n not in RUNTIME_ENV)
    assert not unknown, f"not settings of service/settings.py: {unknown}"
    for name, where in RUNTIME_ENV.items():
        module, function = where.split(":")
        source = inspect.getsource(getattr(importlib.import_module(module), function))
        assert f'"{name}"' in source, f"{where} no longer reads {name}"
    # the init container talks to the chart (MODEL_DIR), not to the service
    for init in pod.get("initContainers", []):
        assert not [n for n in env_of(init) if n.startswith("GEARS_H_")]


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_env_values_are_valid_settings(
    values_id: str, releases: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = releases[values_id].server_container()
    settings = _settings_from(server, monkeypatch)  # raises on a value the service refuses
    assert settings.host == "0.0.0.0"
    mounts = {m["mountPath"] for m in server["volumeMounts"]}
    assert str(settings.compilation_cache_dir) in mounts
    api_key = "GEARS_H_API_KEY" in env_of(server)
    assert (settings.api_key is not None) == api_key


# -- ports -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_container_ports_are_the_bound_ports(
    values_id: str, releases: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = releases[values_id]
    server = rendered.server_container()
    settings = _settings_from(server, monkeypatch)
    ports = container_ports(server)
    assert ports["http"] == settings.port
    if settings.grpc_port:
        assert ports["grpc"] == settings.grpc_port
    else:
        assert "grpc" not in ports  # GEARS_H_GRPC_PORT=0: gRPC is off
    service = rendered.one("Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    assert {p["name"] for p in service["spec"]["ports"]} == set(ports)


def test_chart_defaults_are_service_defaults() -> None:
    import yaml

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["server"]["httpPort"] == setting_default("port") == 8000
    assert values["server"]["grpc"]["port"] == setting_default("grpc_port") == 8001
    assert values["service"]["httpPort"] == setting_default("port")
    assert values["service"]["grpcPort"] == setting_default("grpc_port")
    assert values["server"]["drainSeconds"] == setting_default("drain_seconds")
    assert values["server"]["logLevel"] == setting_default("log_level")
    assert values["model"]["name"] == setting_default("model")


def test_schema_mirrors_settings(releases: dict[str, Rendered]) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    server = schema["properties"]["server"]["properties"]
    assert set(server["logLevel"]["enum"]) == set(get_args(LogLevel))
    # server.env takes exactly the settings the chart does not set itself: a misspelt
    # GEARS_H_* name would be ignored by the service, so the schema refuses it at install.
    allowed = set(server["env"]["propertyNames"]["enum"])
    chart_sets = {  # what the templates set, beyond the values files' server.env
        name
        for values_id, rendered in releases.items()
        for name in env_of(rendered.server_container())
        if name.startswith("GEARS_H_")
        and name not in load_values(values_id).get("server", {}).get("env", {})
    }
    settings = set(setting_env_names())
    expected = settings - chart_sets - set(NOT_FOR_CHART)
    assert allowed == expected, (
        "values.schema.json server.env.propertyNames.enum must list the GEARS_H_* settings "
        f"the chart does not set: add {sorted(expected - allowed)}, "
        f"remove {sorted(allowed - expected)}"
    )
    assert set(NOT_FOR_CHART) <= settings


# -- paths -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_probe_paths_are_the_health_routes(
    values_id: str,
    releases: dict[str, Rendered],
    app_routes: dict[Callable[..., Any], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = releases[values_id].server_container()
    settings = _settings_from(server, monkeypatch)
    ports = container_ports(server)
    expected = {
        "startupProbe": app_routes[v2.ready],
        "readinessProbe": app_routes[v2.ready],
        "livenessProbe": app_routes[v2.live],
    }
    for probe, path in expected.items():
        http_get = server[probe]["httpGet"]
        assert http_get["path"] == path, probe
        port = http_get["port"]
        assert (ports[port] if isinstance(port, str) else port) == settings.port, probe


def test_probe_paths_answer_as_health_checks(releases: dict[str, Rendered]) -> None:
    """The paths themselves, asked of the app: live 200, ready 503 until warm (not 404)."""
    server = releases["default"].server_container()
    ready = _get(server["readinessProbe"]["httpGet"]["path"])
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert "Retry-After" in ready.headers or ready.json().get("error")
    live = _get(server["livenessProbe"]["httpGet"]["path"])
    assert live.status_code == 200 and live.json()["live"] is True
    assert _get("/v2/health/no-such-probe").status_code == 404  # a drifted path would fail


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_helm_test_calls_ready(
    values_id: str, releases: dict[str, Rendered], app_routes: dict[Callable[..., Any], str]
) -> None:
    pod = releases[values_id].one("Pod", hook="test")
    url = pod["spec"]["containers"][0]["command"][-1]
    assert httpx.URL(url).path == app_routes[v2.ready]


def test_service_monitor_scrapes_metrics_route(
    releases_with_crd: dict[str, Rendered], app_routes: dict[Callable[..., Any], str]
) -> None:
    rendered = releases_with_crd["gpu-pvc"]
    (endpoint,) = rendered.one("ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["path"] == app_routes[metrics_routes.metrics]
    service_port = next(p for p in rendered.one("Service")["spec"]["ports"] if p["name"] == "http")
    assert endpoint["port"] == service_port["name"]
    assert service_port["targetPort"] == "http"  # /metrics is on the HTTP port


def test_custom_metric_is_exported() -> None:
    """The HPA's custom metric in ci/cpu-apikey-hpa-values.yaml is one the service exports."""
    from service.metrics import Metrics

    exported = {m.name for m in Metrics().registry.collect()}
    for metric in load_values("cpu-apikey-hpa")["autoscaling"]["metrics"]:
        assert metric["pods"]["metric"]["name"] in exported
