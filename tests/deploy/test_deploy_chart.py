"""The Helm chart, offline (SPEC §9): ``helm lint``, values against ``values.schema.json``,
every rendered manifest against the Kubernetes 1.30 schemas (strict), yamllint, and the
chart's own promises (GPU limits, non-root, read-only root, probes, drain, PDB, HPA,
ServiceMonitor gated on its CRD, ``helm test``)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from deploy_kit import (
    CHART,
    CI_VALUES,
    KUBE_VERSION,
    RELEASE,
    SERVICE_MONITOR_API,
    VALUES_IDS,
    YAMLLINT_CONFIG,
    Rendered,
    env_of,
    load_values,
    render,
)
from optional_tools import require_module

# Kinds the chart may render; every one but the CRD-backed ServiceMonitor has a 1.30 schema.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def test_ci_values_sets_exist() -> None:
    names = {p.name for p in CI_VALUES}
    assert len(names) >= 2, names
    assert {"gpu-pvc-values.yaml", "cpu-apikey-hpa-values.yaml"} <= names


# -- helm lint and values.schema.json ---------------------------------------------------------------


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_helm_lint(values_id: str) -> None:
    helm_python = require_module("helm_python")
    report = helm_python.lint(
        CHART, load_values(values_id) or None, strict=True, kube_version=f"v{KUBE_VERSION}"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def _schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


class Draft7Partial:
    """The schema with every ``required`` dropped: checks names and types of a partial file."""

    def __init__(self, schema: dict[str, Any]) -> None:
        jsonschema = require_module("jsonschema")
        self.validator = jsonschema.Draft7Validator(_without_required(copy.deepcopy(schema)))

    def errors(self, values: dict[str, Any]) -> list[str]:
        return [f"{list(e.path)}: {e.message}" for e in self.validator.iter_errors(values)]


def _without_required(node: Any) -> Any:
    if isinstance(node, dict):
        node.pop("required", None)
        for value in node.values():
            _without_required(value)
    elif isinstance(node, list):
        for value in node:
            _without_required(value)
    return node


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_values_match_schema(values_id: str) -> None:
    """The file alone and merged with the defaults (what an install validates) both pass."""
    jsonschema = require_module("jsonschema")
    helm_python = require_module("helm_python")
    schema = _schema()
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    with helm_python.Chart.load(CHART) as chart:
        merged = chart.merge_values(load_values(values_id))
        chart.validate_schema(merged)  # Helm's own validator
    errors = [e.message for e in validator.iter_errors(merged)]
    assert not errors, errors
    assert not list(validator.iter_errors(defaults))
    if values_id != "default":  # an override file is a partial document of the same shape
        partial = Draft7Partial(schema)
        assert not partial.errors(load_values(values_id))


@pytest.mark.parametrize(
    "override",
    [
        {"server": {"env": {"XLA_FLAGS": "--x"}}},  # only GEARS_H_* settings
        {"server": {"env": {"GEARS_H_PORT": "9000"}}},  # set by the chart already
        {"server": {"env": {"GEARS_H_BATCH_WAIT": "5"}}},  # misspelt: the service would ignore it
        {"server": {"logLevel": "verbose"}},
        {"server": {"httpPort": 0}},
        {"model": {"source": "pvc"}},  # no claimName
        {"model": {"source": "s3"}},
        {"gpu": {"memoryFraction": 1.5}},
        {"shutdown": {"terminationGracePeriodSeconds": "long"}},
        {"replicas": 2},  # a typo of replicaCount
    ],
    ids=lambda o: json.dumps(o, separators=(",", ":")),
)
def test_schema_rejects(override: dict[str, Any]) -> None:
    helm_python = require_module("helm_python")
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(chart.merge_values(override))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"shutdown": {"terminationGracePeriodSeconds": 30}}, "at least"),
        (
            {"model": {"source": "initContainer"}},
            "needs model.initContainer.command",
        ),
        ({"apiKey": {"create": True}}, "needs apiKey.value"),
        ({"server": {"grpc": {"enabled": True, "port": 8000}}}, "must differ"),
        (
            {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}},
            "needs targetCPUUtilizationPercentage or metrics",
        ),
    ],
)
def test_render_refuses(override: dict[str, Any], message: str) -> None:
    helm_python = require_module("helm_python")
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(override)


# -- Kubernetes 1.30 schemas and yamllint ---------------------------------------------------------


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_manifests_validate_against_kubernetes_schemas(
    values_id: str, releases_with_crd: dict[str, Rendered]
) -> None:
    kv = require_module("kubernetes_validate")
    rendered = releases_with_crd[values_id]
    assert rendered.objects
    for obj in rendered.objects:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue  # no upstream schema; its fields are checked in test_service_monitor
        try:
            kv.validate(obj, KUBE_VERSION, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{values_id}: {obj['kind']} {obj['metadata']['name']}: {path}: {exc}")


def test_strict_validation_catches_unknown_fields(releases: dict[str, Rendered]) -> None:
    """The validator is not vacuous: an unknown field or a wrong type fails."""
    kv = require_module("kubernetes_validate")
    deployment = copy.deepcopy(releases["default"].one("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["gpuCount"] = 1
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBE_VERSION, strict=True)
    service = copy.deepcopy(releases["default"].one("Service"))
    service["spec"]["ports"][0]["port"] = "eight thousand"
    with pytest.raises(kv.ValidationError):
        kv.validate(service, KUBE_VERSION, strict=True)


def _yamllint(text: str, name: str) -> list[str]:
    linter = require_module("yamllint.linter")
    config = require_module("yamllint.config").YamlLintConfig(file=str(YAMLLINT_CONFIG))
    return [f"{name}:{p.line}:{p.column} {p.rule}: {p.desc}" for p in linter.run(text, config)]


def test_yamllint_values_and_chart_files() -> None:
    files = [CHART / "values.yaml", CHART / "Chart.yaml", *CI_VALUES, YAMLLINT_CONFIG]
    problems = [p for f in files for p in _yamllint(f.read_text(), f.name)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_yamllint_rendered(values_id: str, releases_with_crd: dict[str, Rendered]) -> None:
    problems = [
        p
        for path, text in releases_with_crd[values_id].files.items()
        if not path.endswith(".txt") and text.strip()
        for p in _yamllint(text, path)
    ]
    assert not problems, "\n".join(problems)


# -- what the chart promises ----------------------------------------------------------------------


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_pod_is_non_root_with_read_only_root(values_id: str, releases: dict[str, Rendered]) -> None:
    pod = releases[values_id].one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    writable = {"/tmp"}
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert writable <= mounts, container["name"]
    server = releases[values_id].server_container()
    cache = env_of(server)["GEARS_H_COMPILATION_CACHE_DIR"]["value"]
    assert cache in {m["mountPath"] for m in server["volumeMounts"]}  # writable cache volume


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_gpu_resources_and_scheduling(values_id: str, releases: dict[str, Rendered]) -> None:
    values = load_values(values_id)
    with require_module("helm_python").Chart.load(CHART) as chart:
        merged = chart.merge_values(values)
    pod = releases[values_id].one("Deployment")["spec"]["template"]["spec"]
    limits = releases[values_id].server_container()["resources"].get("limits", {})
    env = env_of(releases[values_id].server_container())
    if merged["gpu"]["enabled"]:
        assert limits["nvidia.com/gpu"] == merged["gpu"]["count"] == 1  # one process per GPU
        assert float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"]["value"]) == pytest.approx(
            merged["gpu"]["memoryFraction"]
        )
    else:
        assert "nvidia.com/gpu" not in limits
        assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in env
    for key in ("nodeSelector", "tolerations", "affinity"):
        assert pod.get(key, type(merged[key])()) == merged[key], key


def test_gpu_values_schedule_on_gpu_nodes(releases: dict[str, Rendered]) -> None:
    pod = releases["gpu-pvc"].one("Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert "podAntiAffinity" in pod["affinity"]


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_model_source(values_id: str, releases: dict[str, Rendered]) -> None:
    """image: GEARS_H_MODEL names the bundle inside the image; pvc: a read-only claim;
    initContainer: an emptyDir the init container writes and the server mounts read-only."""
    rendered = releases[values_id]
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    server = rendered.server_container()
    model = env_of(server)["GEARS_H_MODEL"]["value"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    source = load_values(values_id).get("model", {}).get("source", "image")
    if source == "image":
        assert model == "default" and "model" not in volumes and "initContainers" not in pod
        return
    assert mounts["model"]["readOnly"] is True
    assert model.startswith(mounts["model"]["mountPath"] + "/")
    if source == "pvc":
        assert volumes["model"]["persistentVolumeClaim"] == {
            "claimName": "gears-h-models",
            "readOnly": True,
        }
        assert model == "/models/hbn-butanol-v1"
    else:
        assert "emptyDir" in volumes["model"]
        (init,) = pod["initContainers"]
        init_mounts = {m["name"]: m for m in init["volumeMounts"]}
        assert not init_mounts["model"].get("readOnly", False)
        assert env_of(init)["MODEL_DIR"]["value"] == model


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_probes_sized_for_warm_up(values_id: str, releases: dict[str, Rendered]) -> None:
    server = releases[values_id].server_container()
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # JIT warm-up, cold
    assert startup["httpGet"]["path"] == server["readinessProbe"]["httpGet"]["path"]
    liveness = server["livenessProbe"]
    # liveness tolerates a busy device call (> 30 s) before restarting the pod
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_termination_grace_covers_pre_stop_and_drain(
    values_id: str, releases: dict[str, Rendered]
) -> None:
    pod = releases[values_id].one("Deployment")["spec"]["template"]["spec"]
    server = releases[values_id].server_container()
    pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(env_of(server)["GEARS_H_DRAIN_SECONDS"]["value"])
    assert pre_stop >= 1
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 10


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_pdb_and_replicas(values_id: str, releases: dict[str, Rendered]) -> None:
    rendered = releases[values_id]
    deployment = rendered.one("Deployment")
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpas = rendered.all("HorizontalPodAutoscaler")
    if load_values(values_id).get("autoscaling", {}).get("enabled"):
        (hpa,) = hpas
        assert "replicas" not in deployment["spec"]  # the HPA owns the replica count
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }
        kinds = {m["type"] for m in hpa["spec"]["metrics"]}
        assert kinds == {"Resource", "Pods"}  # CPU and the custom queue-depth metric
    else:
        assert not hpas
        assert deployment["spec"]["replicas"] == load_values(values_id).get("replicaCount", 1)


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_api_key_from_secret(values_id: str, releases: dict[str, Rendered]) -> None:
    rendered = releases[values_id]
    env = env_of(rendered.server_container())
    api_key = load_values(values_id).get("apiKey", {})
    if not (api_key.get("create") or api_key.get("existingSecret")):
        assert "GEARS_H_API_KEY" not in env and not rendered.all("Secret")
        return
    ref = env["GEARS_H_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert "value" not in env["GEARS_H_API_KEY"]  # never inline
    (secret,) = rendered.all("Secret")
    assert secret["metadata"]["name"] == ref["name"]
    assert ref["key"] in secret["data"]
    assert "API_KEY=$(kubectl" in rendered.notes


def test_existing_api_key_secret_is_referenced_not_created() -> None:
    require_module("helm_python")
    rendered = render({"apiKey": {"existingSecret": "team-gears-h", "secretKey": "token"}})
    ref = env_of(rendered.server_container())["GEARS_H_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "team-gears-h", "key": "token"}
    assert not rendered.all("Secret")


def test_service_monitor_gated_on_crd(
    releases: dict[str, Rendered], releases_with_crd: dict[str, Rendered]
) -> None:
    assert load_values("gpu-pvc")["serviceMonitor"]["enabled"] is True
    assert not releases["gpu-pvc"].all("ServiceMonitor")  # no CRD: nothing to apply
    assert "ServiceMonitor CRD" in releases["gpu-pvc"].notes
    assert not releases_with_crd["default"].all("ServiceMonitor")  # not enabled
    rendered = releases_with_crd["gpu-pvc"]
    monitor = rendered.one("ServiceMonitor")
    service = rendered.one("Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert set(endpoint) == {"port", "path", "interval", "scrapeTimeout"}
    assert SERVICE_MONITOR_API.rsplit("/", 1)[0] == monitor["apiVersion"]


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_helm_test_pod(values_id: str, releases: dict[str, Rendered]) -> None:
    rendered = releases[values_id]
    pod = rendered.one("Pod", hook="test")
    service = rendered.one("Service")
    (container,) = pod["spec"]["containers"]
    url = container["command"][-1]
    http = next(p for p in service["spec"]["ports"] if p["name"] == "http")
    assert url.startswith(f"http://{service['metadata']['name']}:{http['port']}/")
    assert pod["spec"]["restartPolicy"] == "Never"
    selected = service["spec"]["selector"].items()
    assert not selected <= pod["metadata"]["labels"].items()  # never a Service endpoint
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("values_id", VALUES_IDS)
def test_notes(values_id: str, releases: dict[str, Rendered]) -> None:
    notes = releases[values_id].notes
    assert "/v2/health/ready" in notes and f"helm test {RELEASE}" in notes
