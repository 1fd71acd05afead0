"""helm lint, helm template, and the values contract: every value documented, unknown keys rejected."""

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.chart.conftest import CHART, EVERYTHING, Manifest, Render, by_kind, helm, pod_specs


@pytest.mark.parametrize("values", [None, EVERYTHING], ids=["default", "everything"])
def test_helm_lint_passes(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["--values", str(values)] if values else [])
    done = helm(*args)
    assert done.returncode == 0, done.stdout + done.stderr


def test_default_install_has_operator_ingest_api_crd_and_rbac(render: Render) -> None:
    kinds = sorted({f"{o['kind']}/{o['metadata']['name']}" for o in render()})
    assert kinds == [
        "ClusterRole/hr-headrace-api",
        "ClusterRole/hr-headrace-edit",
        "ClusterRole/hr-headrace-ingest",
        "ClusterRole/hr-headrace-operator",
        "ClusterRole/hr-headrace-view",
        "ClusterRoleBinding/hr-headrace-api",
        "ClusterRoleBinding/hr-headrace-ingest",
        "ClusterRoleBinding/hr-headrace-operator",
        "CustomResourceDefinition/ingestionjobs.headrace.io",
        "Deployment/hr-headrace-api",
        "Deployment/hr-headrace-ingest",
        "Deployment/hr-headrace-operator",
        "Job/hr-headrace-migrate",
        "NetworkPolicy/hr-headrace-api",
        "NetworkPolicy/hr-headrace-ingest",
        "NetworkPolicy/hr-headrace-migrate",
        "NetworkPolicy/hr-headrace-operator",
        "PodDisruptionBudget/hr-headrace-ingest",
        "PodDisruptionBudget/hr-headrace-operator",
        "Role/hr-headrace-operator-leader",
        "RoleBinding/hr-headrace-operator-leader",
        "Service/hr-headrace-api",
        "Service/hr-headrace-ingest",
        "Service/hr-headrace-operator-metrics",
        "ServiceAccount/hr-headrace-api",
        "ServiceAccount/hr-headrace-ingest",
        "ServiceAccount/hr-headrace-migrate",
        "ServiceAccount/hr-headrace-operator",
    ]


def test_everything_on_renders_every_optional_part(render: Render) -> None:
    kinds = {o["kind"] for o in render(EVERYTHING)}
    for kind in [
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "ConfigMap",
        "StatefulSet",
        "Secret",
    ]:
        assert kind in kinds


def test_operator_runs_a_leader_and_a_standby_probed_on_its_liveness_endpoint(render: Render) -> None:
    (operator,) = [d for d in by_kind(render(), "Deployment") if d["metadata"]["name"].endswith("-operator")]
    spec = operator["spec"]
    assert spec["replicas"] == 2
    # A rollout never has fewer pods than replicas: the standby (or the new pod) is there to take over.
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    container = spec["template"]["spec"]["containers"][0]
    assert container["args"][0] == "operator"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HEADRACE_LEADER_ELECTION_ENABLED"] == "true"
    liveness = next(a for a in container["args"] if a.startswith("--liveness="))
    for probe in ("livenessProbe", "readinessProbe"):
        port = container[probe]["httpGet"]["port"]
        (declared,) = [p for p in container["ports"] if p["name"] == port]
        assert liveness == f"--liveness=http://0.0.0.0:{declared['containerPort']}/healthz"
        assert container[probe]["httpGet"]["path"] == "/healthz"
    (spread,) = spec["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_a_single_operator_replica_has_no_spread(render: Render) -> None:
    (operator,) = [
        d
        for d in by_kind(render(sets=("operator.replicas=1",)), "Deployment")
        if d["metadata"]["name"].endswith("-operator")
    ]
    assert operator["spec"]["replicas"] == 1
    assert "topologySpreadConstraints" not in operator["spec"]["template"]["spec"]


def test_operator_hands_worker_settings_to_the_pods_it_creates(render: Render) -> None:
    (operator,) = [d for d in by_kind(render(EVERYTHING), "Deployment") if d["metadata"]["name"].endswith("-operator")]
    env = {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HEADRACE_WORKER_IMAGE"]["value"] == "registry.example.com/headrace-worker:0.1.0"
    assert not [name for name in env if "SECRET" in name and name != "HEADRACE_WORKER_IMAGE_PULL_SECRETS"], env
    assert env["HEADRACE_NAMESPACES"]["value"] == "docs-team research"
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "hr-headrace-database", "key": "DATABASE_URL"}


def test_worker_image_defaults_to_the_chart_image(render: Render) -> None:
    (operator,) = [d for d in by_kind(render(), "Deployment") if d["metadata"]["name"].endswith("-operator")]
    container = operator["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["HEADRACE_WORKER_IMAGE"]["value"] == container["image"] == "ghcr.io/headrace/headrace:0.1.0"
    assert "HEADRACE_NAMESPACES" not in env, "every namespace by default"


def test_workers_get_the_ingest_service_and_the_operator_no_secret_but_the_legacy_one(render: Render) -> None:
    """The operator tells worker pods where the ingest Service is; it may read and delete only the worker
    Secret earlier releases wrote (to remove it), and write no Secret at all."""
    objects = render()
    (operator,) = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-operator")]
    env = {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    (service,) = [s for s in by_kind(objects, "Service") if s["metadata"]["name"].endswith("-ingest")]
    (port,) = service["spec"]["ports"]
    assert env["HEADRACE_INGEST_URL"]["value"] == f"http://{service['metadata']['name']}.headrace.svc:{port['port']}"
    assert env["HEADRACE_INGEST_AUDIENCE"]["value"] == "headrace-ingest"
    assert not [name for name in env if "TENANT" in name or name == "HEADRACE_DATABASE_SECRET"]
    (role,) = [r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith("-operator")]
    secrets = [rule for rule in role["rules"] if "secrets" in rule["resources"]]
    assert secrets == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["headrace-worker-database"],
            "verbs": ["get", "delete"],
        }
    ]


def test_the_ingest_service_holds_the_database_url_and_admits_worker_pods(render: Render) -> None:
    objects = render()
    (ingest,) = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-ingest")]
    (container,) = ingest["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["ingest-api"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "headrace-database", "key": "DATABASE_URL"}
    assert env["HEADRACE_INGEST_PORT"]["value"] == "8081"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    (policy,) = [p for p in by_kind(objects, "NetworkPolicy") if p["metadata"]["name"].endswith("-ingest")]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    workers = {"app.kubernetes.io/name": "headrace", "app.kubernetes.io/component": "worker"}
    assert {"namespaceSelector": {}, "podSelector": {"matchLabels": workers}} in rule["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in rule["from"]
    (pdb,) = [p for p in by_kind(objects, "PodDisruptionBudget") if p["metadata"]["name"].endswith("-ingest")]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_api_probes_and_service(render: Render) -> None:
    objects = render()
    (api,) = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-api")]
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    (service,) = [s for s in by_kind(objects, "Service") if s["metadata"]["name"].endswith("-api")]
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    # The API and its metrics on separate ports, the metrics one never the callers'.
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", "http"),
        ("metrics", "metrics"),
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] != ports["metrics"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HEADRACE_METRICS_PORT"] == str(ports["metrics"])


def test_api_autoscaling_drops_fixed_replicas(render: Render) -> None:
    objects = render(EVERYTHING)
    (api,) = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-api")]
    assert "replicas" not in api["spec"]
    (hpa,) = by_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == api["metadata"]["name"]


def test_migrations_run_as_a_pre_install_hook_with_an_external_database(render: Render) -> None:
    (job,) = by_kind(render(), "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    (sa,) = [s for s in by_kind(render(), "ServiceAccount") if s["metadata"]["name"].endswith("-migrate")]
    assert int(sa["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )


def test_migrations_wait_for_the_bundled_dev_postgres(render: Render) -> None:
    (job,) = by_kind(render(sets=("postgresql.enabled=true",)), "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


def test_crd_is_kept_on_uninstall_unless_told_otherwise(render: Render) -> None:
    (crd,) = by_kind(render(), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (crd,) = by_kind(render(sets=("crds.keep=false",)), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})
    assert by_kind(render(sets=("crds.enabled=false",)), "CustomResourceDefinition") == []


def test_fullname_stays_within_63_characters(render: Render) -> None:
    objects = render(sets=("fullnameOverride=" + "a" * 80,))
    for obj in objects:
        if obj["kind"] != "CustomResourceDefinition":
            assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
    names = {o["metadata"]["name"] for o in by_kind(objects, "Deployment")}
    assert len(names) == 3, "truncation must keep the component suffix apart"


def test_every_object_carries_the_standard_labels(rendered: list[Manifest]) -> None:
    # The CRD is generated by `headrace crd` and shared by every release, so it carries no instance label.
    for obj in [o for o in rendered if o["kind"] != "CustomResourceDefinition"]:
        labels = obj["metadata"]["labels"]
        for key in ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"]:
            assert key in labels, (obj["kind"], obj["metadata"]["name"], key)


def test_every_pod_has_a_tmp_emptydir(rendered: list[Manifest]) -> None:
    for name, spec in pod_specs(rendered):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


# Bad input: the schema and the templates refuse it with a message naming the value.
@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("api.bogus=1",), "additional properties 'bogus' not allowed"),
        (("operator.resources.requests.gpu=1",), "additional properties 'gpu' not allowed"),
        (("api.replicas=two",), "/api/replicas"),
        (("api.auth.mode=none",), "/api/auth/mode"),
        (("securityContext.allowPrivilegeEscalation=true",), "/securityContext/allowPrivilegeEscalation"),
        (("podSecurityContext.runAsNonRoot=false",), "/podSecurityContext/runAsNonRoot"),
        (("database.existingSecret=Not_A_Name",), "/database/existingSecret"),
        (("database.existingSecret=",), "database.existingSecret must name a Secret"),
        (("api.auth.mode=token",), "api.auth.mode=token needs api.auth.tokenSecret.name"),
        (("operator.watchNamespaces={Bad_NS}",), "/operator/watchNamespaces/0"),
        (
            ("operator.leaderElection.renewDeadlineSeconds=12",),
            "operator.leaderElection needs retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds",
        ),
        (("api.rerank.default=true",), "api.rerank.default needs api.rerank.url"),
        (("api.rerank.url=ftp://reranker",), "/api/rerank/url"),
        (("api.rerank.api=openai",), "/api/rerank/api"),
        (("api.rerank.candidates=0",), "/api/rerank/candidates"),
        (("api.rerank.bogus=1",), "additional properties 'bogus' not allowed"),
    ],
)
def test_bad_values_are_rejected(sets: tuple[str, ...], message: str) -> None:
    args = ["template", "hr", str(CHART)]
    for item in sets:
        args += ["--set", item]
    done = helm(*args)
    assert done.returncode != 0
    assert message in done.stderr


def test_every_value_has_a_comment() -> None:
    """Each value in values.yaml has a comment line right above it, or sits inside a commented value
    (like the keys of `resources`). An uncommented key is allowed only as a section of commented keys."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys = [(n, m) for n, line in enumerate(lines) if (m := re.match(r"^(\s*)([A-Za-z][\w-]*):", line))]
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    uncommented = []
    for index, (number, match) in enumerate(keys):
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        commented = number > 0 and lines[number - 1].strip().startswith("#")
        inherited = any(documented for _, documented in stack)
        has_children = index + 1 < len(keys) and len(keys[index + 1][1].group(1)) > indent
        if not (commented or inherited or has_children):
            uncommented.append(f"{match.group(2)} (line {number + 1})")
        stack.append((indent, commented or inherited))
    assert uncommented == []


def _object_schemas(schema: Any, path: str = "$") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            found.append((path, schema))
        for key, value in schema.items():
            found += _object_schemas(value, f"{path}.{key}")
    elif isinstance(schema, list):
        for n, value in enumerate(schema):
            found += _object_schemas(value, f"{path}[{n}]")
    return found


def test_values_schema_closes_every_object_of_ours() -> None:
    """Every object is closed (additionalProperties false) or a typed map; only Kubernetes API types
    (affinity, securityContext, ...), which the API server checks, stay open."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []
    for path, node in _object_schemas(schema):
        closed = node.get("additionalProperties") is False or isinstance(node.get("additionalProperties"), dict)
        kubernetes_type = re.search(
            r"(core|networking)/v1|EnvVar|Toleration|parent charts", node.get("description", "")
        )
        if not closed and not kubernetes_type and not path.endswith(".items"):
            open_objects.append(path)
    assert open_objects == []


@pytest.mark.parametrize("values", [None, EVERYTHING], ids=["default", "everything"])
def test_notes_give_the_next_commands(render: Render, values: Path | None) -> None:
    """NOTES.txt, rendered by a client-side dry-run install (no cluster), names objects that exist."""
    args = ["install", "hr", str(CHART), "--namespace", "headrace", "--dry-run=client"]
    done = helm(*args, *(["--values", str(values)] if values else []))
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    assert "kubectl get ij" in notes
    assert "kind: IngestionJob" in notes
    services = by_kind(render(*([values] if values else [])), "Service")
    (service,) = [s for s in services if s["metadata"]["name"].endswith("-api")]
    assert f"svc/{service['metadata']['name']}" in notes
    assert "Authorization: Bearer $TOKEN" in notes
