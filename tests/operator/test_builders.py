"""The pure builders against golden manifests in tests/data/ (regenerate with HEADRACE_UPDATE_GOLDEN=1)."""

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from headrace.model import IngestionJob, Resources, load_manifest
from headrace.model.contract import (
    INGEST_AUDIENCE,
    INGEST_TOKEN_DIR,
    INGEST_TOKEN_PATH,
    WORKER_EXIT_STOPPED,
    WORKER_SECRETS_DIR,
    WORKER_VOLUME_ROOT,
)
from headrace.operator.resources.hpa import build_hpa
from headrace.operator.resources.job import InvalidSpec, WorkerPodSettings, build_worker_job, job_name
from headrace.operator.resources.labels import selector
from headrace.operator.resources.podsecurity import restricted_violations

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
UID = "6f1c1f5e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
DEFAULT_PODS = WorkerPodSettings()


def example(name: str, **spec: Any) -> IngestionJob:
    job = load_manifest(ROOT / "examples" / name)
    data = job.to_wire()
    data["metadata"]["uid"] = UID
    data["spec"] = {**data["spec"], **spec}
    return IngestionJob.model_validate(data)


def worker_job(job: IngestionJob, run: int = 1, pods: WorkerPodSettings = DEFAULT_PODS) -> dict[str, Any]:
    return build_worker_job(
        job,
        run=run,
        image="ghcr.io/example/headrace:0.1.0",
        pods=pods,
        ingest_url="http://headrace-ingest.headrace.svc:8081",
        ingest_audience=INGEST_AUDIENCE,
        backoff_limit=6,
        ttl_seconds_after_finished=86_400,
    )


def assert_golden(name: str, manifest: dict[str, Any]) -> None:
    path = DATA / name
    if os.environ.get("HEADRACE_UPDATE_GOLDEN"):
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    assert manifest == yaml.safe_load(path.read_text()), f"{name} differs; review and regenerate"


def test_worker_job_matches_golden() -> None:
    assert_golden("worker-job.yaml", worker_job(example("volume-job.yaml"), run=3))


def test_builtin_worker_job_matches_golden() -> None:
    assert_golden("worker-job-builtin.yaml", worker_job(example("scheduled-builtin-job.yaml")))


def test_hpa_matches_golden() -> None:
    job = example("volume-job.yaml", workers={"min": 0, "max": 6, "autoscaling": {"tasksPendingPerWorker": 20}})
    assert_golden("hpa.yaml", build_hpa(job))


def test_worker_pod_holds_a_token_for_the_ingest_service_and_no_database_credential() -> None:
    pod = worker_job(example("s3-job.yaml"))["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HEADRACE_INGEST_URL"] == "http://headrace-ingest.headrace.svc:8081"
    assert env["HEADRACE_INGEST_TOKEN_FILE"] == INGEST_TOKEN_PATH
    assert not [name for name in env if "DATABASE" in name]
    # The only Secret volume is the one the spec names (S3 credentials); the token is projected, for our
    # audience only (the API server refuses it), bound to the pod, and short-lived.
    assert [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v] == ["reports-s3"]
    (token,) = [v["projected"]["sources"][0]["serviceAccountToken"] for v in pod["volumes"] if "projected" in v]
    assert token == {"audience": INGEST_AUDIENCE, "expirationSeconds": 600, "path": "token"}
    assert {"name": "ingest-token", "mountPath": INGEST_TOKEN_DIR, "readOnly": True} in container["volumeMounts"]
    assert pod["automountServiceAccountToken"] is False


def test_worker_pod_keeps_the_contract() -> None:
    manifest = worker_job(example("volume-job.yaml"))
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["headrace", "worker", "--job", UID]
    assert {"name": "source", "mountPath": WORKER_VOLUME_ROOT, "readOnly": True} in container["volumeMounts"]
    assert {"name": "HEADRACE_VOLUME_ROOT", "value": WORKER_VOLUME_ROOT} in container["env"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["source"]["persistentVolumeClaim"] == {"claimName": "handbook-docs", "readOnly": True}
    assert all(
        m["mountPath"].startswith((WORKER_VOLUME_ROOT, WORKER_SECRETS_DIR, INGEST_TOKEN_DIR, "/tmp"))
        for m in container["volumeMounts"]
    )
    rule = manifest["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "Ignore" and rule["onExitCodes"]["values"] == [WORKER_EXIT_STOPPED]
    assert "completions" not in manifest["spec"] and pod["restartPolicy"] == "Never"
    labels = manifest["spec"]["template"]["metadata"]["labels"]
    wanted = dict(part.split("=") for part in selector(example("volume-job.yaml")).split(","))
    assert wanted.items() <= labels.items()


def test_restricted_security_context() -> None:
    pod = worker_job(example("volume-job.yaml"))["spec"]["template"]["spec"]
    context = pod["containers"][0]["securityContext"]
    assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_suspended_job_has_no_parallelism() -> None:
    assert worker_job(example("volume-job.yaml", suspend=True))["spec"]["parallelism"] == 0
    assert worker_job(example("volume-job.yaml", workers={"replicas": 7, "max": 8}))["spec"]["parallelism"] == 7
    assert worker_job(example("volume-job.yaml", workers={"replicas": 50, "max": 8}))["spec"]["parallelism"] == 8


def test_volume_without_claim_is_invalid_in_a_cluster() -> None:
    job = example("volume-job.yaml", source={"volume": {"path": "docs"}})
    with pytest.raises(InvalidSpec, match=r"spec\.source\.volume\.claimName"):
        worker_job(job)


@pytest.mark.parametrize("name", ["a", "x" * 50, "y" * 63, "z" * 55 + "-" + "w" * 7])
@pytest.mark.parametrize("run", [1, 12345])
def test_job_names_are_short_unique_and_deterministic(name: str, run: int) -> None:
    result = job_name(name, run)
    assert len(result) <= 63 and result.endswith(f"-run-{run}") and result == job_name(name, run)
    assert result[0].isalnum() and "--" not in result
    assert job_name(name + "q", run) != result


def test_s3_worker_job_matches_golden() -> None:
    assert_golden("worker-job-s3.yaml", worker_job(example("s3-job.yaml")))


def test_referenced_secrets_are_mounted_read_only_and_no_volume_is() -> None:
    pod = worker_job(example("s3-job.yaml"))["spec"]["template"]["spec"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "secret-0", "mountPath": f"{WORKER_SECRETS_DIR}/reports-s3", "readOnly": True} in mounts
    assert {"name": "secret-0", "secret": {"secretName": "reports-s3"}} in pod["volumes"]
    assert not any(m["mountPath"] == WORKER_VOLUME_ROOT for m in mounts)
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert "HEADRACE_VOLUME_ROOT" not in env


CUSTOM_PODS = WorkerPodSettings(
    image_pull_policy="Always",
    image_pull_secrets=("registry", "mirror"),
    pod_security_context={
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/headrace.json"},
    },
    security_context={"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    resources=Resources.model_validate({"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}),
    service_account="s3-reader",
)


def test_worker_pod_settings_match_golden() -> None:
    assert_golden("worker-job-settings.yaml", worker_job(example("volume-job.yaml"), pods=CUSTOM_PODS))


def test_worker_pod_settings_reach_the_pod() -> None:
    pod = worker_job(example("volume-job.yaml"), pods=CUSTOM_PODS)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "registry"}, {"name": "mirror"}]
    assert pod["serviceAccountName"] == "s3-reader" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == CUSTOM_PODS.pod_security_context
    assert container["securityContext"] == CUSTOM_PODS.security_context
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}


def test_default_pods_have_no_service_account_or_pull_secrets() -> None:
    pod = worker_job(example("volume-job.yaml"))["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod and "imagePullSecrets" not in pod
    assert pod["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def worker_resources(pods: WorkerPodSettings, **workers: Any) -> dict[str, Any]:
    pod = worker_job(example("volume-job.yaml", workers=workers), pods=pods)["spec"]["template"]["spec"]
    resources: dict[str, Any] = pod["containers"][0]["resources"]
    return resources


def test_job_resources_win_over_the_operator_default() -> None:
    own = {"requests": {"cpu": "250m"}, "limits": {"memory": "3Gi"}}
    assert worker_resources(CUSTOM_PODS, resources=own) == own  # each whole, not merged key by key
    assert worker_resources(CUSTOM_PODS) == CUSTOM_PODS.resources.to_wire()
    assert worker_resources(CUSTOM_PODS, resources={}) == CUSTOM_PODS.resources.to_wire()
    only_limits = worker_resources(CUSTOM_PODS, resources={"limits": {"memory": "8Gi"}})
    assert only_limits == {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "8Gi"}}
    assert worker_resources(WorkerPodSettings()) == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"memory": "1Gi"},
    }


@pytest.mark.parametrize(
    ("pod_context", "context", "problem"),
    [
        ({}, {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}, "runAsNonRoot must be true"),
        (
            {"runAsNonRoot": True},
            {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "seccompProfile",
        ),
        (
            {"runAsNonRoot": True, "seccompProfile": {"type": "Unconfined"}},
            {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "pod seccompProfile Unconfined not allowed",
        ),
        (
            {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            {"allowPrivilegeEscalation": True, "capabilities": {"drop": ["ALL"]}},
            "allowPrivilegeEscalation must be false",
        ),
        (
            {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            {"allowPrivilegeEscalation": False},
            "capabilities must drop ALL",
        ),
        (
            {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}},
            "may add only NET_BIND_SERVICE",
        ),
        (
            {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "privileged": True},
            "privileged",
        ),
        (
            {"runAsNonRoot": True, "runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}},
            {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "runAsUser must not be 0",
        ),
    ],
)
def test_settings_that_break_restricted_are_refused(
    pod_context: dict[str, Any], context: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match='Pod Security "restricted"') as raised:
        WorkerPodSettings(pod_security_context=pod_context, security_context=context)
    assert problem in str(raised.value)


def test_restricted_may_be_met_on_the_container_alone() -> None:
    context = {**WorkerPodSettings().security_context, "readOnlyRootFilesystem": False}
    settings = WorkerPodSettings(pod_security_context={}, security_context=context)
    pod = worker_job(example("volume-job.yaml"), pods=settings)["spec"]["template"]["spec"]
    assert pod["securityContext"] == {}
    assert restricted_violations(pod, read_only_root=False) == []


def test_default_resources_without_a_cpu_request_are_refused() -> None:
    with pytest.raises(ValueError, match="request cpu"):
        WorkerPodSettings(resources=Resources.model_validate({"requests": {"memory": "1Gi"}}))
