"""`headrace operator` and `headrace crd` on the command line: options, environment and bad usage."""

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import kmock
import pytest
from click.testing import CliRunner

from headrace.cli import main
from headrace.model.crd import crd_yaml
from headrace.operator.kube import JOBS
from tests.operator.cluster import IJS, client_for, emulator_kubeconfig
from tests.operator.conftest import INGEST_URL, Namespaces, ij
from tests.sockets import free_port


def test_operator_needs_a_database_and_an_image(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HEADRACE_DATABASE_URL", "DATABASE_URL", "HEADRACE_WORKER_IMAGE"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["operator", "--worker-image", "img"])
    assert result.exit_code == 2 and "database URL" in result.output
    result = CliRunner().invoke(main, ["operator", "--database-url", "postgresql://x/y"])
    assert result.exit_code == 2 and "--worker-image or HEADRACE_WORKER_IMAGE" in result.output
    assert "--ingest-url or HEADRACE_INGEST_URL" in result.output


def test_operator_refuses_all_namespaces_with_a_namespace() -> None:
    args = ["operator", "--database-url", "postgresql://x/y", "--worker-image", "img", "-A", "-n", "team-a"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "exclude each other" in result.output


def test_operator_help_names_its_environment() -> None:
    """Every setting of OperatorSettings is named in `--help`, by the variable it is read from."""
    from headrace.operator.settings import OperatorSettings

    result = CliRunner().invoke(main, ["operator", "--help"], terminal_width=400)
    assert result.exit_code == 0
    for name in OperatorSettings.model_fields:
        assert f"HEADRACE_{name.upper()}" in result.output


OPERATOR = ["operator", "--database-url", "postgresql://unused/x", "--worker-image", "img"]
NO_RUN_AS_NON_ROOT = '{"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}'


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"HEADRACE_WORKER_SECURITY_CONTEXT": '{"allowPrivilegeEscalation": true, "capabilities": {"drop": []}}'},
            "container worker: allowPrivilegeEscalation must be false",
        ),
        (
            {
                "HEADRACE_WORKER_POD_SECURITY_CONTEXT": '{"runAsNonRoot": false}',
                "HEADRACE_WORKER_SECURITY_CONTEXT": NO_RUN_AS_NON_ROOT,
            },
            "container worker: runAsNonRoot must be true",
        ),
        ({"HEADRACE_WORKER_POD_SECURITY_CONTEXT": "runAsNonRoot: true"}, "worker_pod_security_context"),
        ({"HEADRACE_WORKER_SECURITY_CONTEXT": '["ALL"]'}, "worker_security_context: Input should be a valid dict"),
        ({"HEADRACE_WORKER_RESOURCES": '{"requests": {"cpu": "lots"}}'}, "worker_resources.requests.cpu"),
        ({"HEADRACE_WORKER_RESOURCES": '{"requests": {"memory": "1Gi"}}'}, "must request cpu"),
        ({"HEADRACE_WORKER_IMAGE_PULL_POLICY": "Sometimes"}, "worker_image_pull_policy"),
        (
            {"HEADRACE_INGEST_URL": "headrace-ingest:8081"},
            "ingest_url: 'headrace-ingest:8081' is not an http:// or https:// URL",
        ),
    ],
)
def test_operator_refuses_bad_worker_pod_settings_at_start(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    """Refused before anything connects: the database URL points nowhere and no cluster is configured."""
    monkeypatch.setenv("HEADRACE_INGEST_URL", INGEST_URL)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, OPERATOR)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_crd_to_stdout(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["crd", "--stdout"])
    assert result.exit_code == 0 and result.output == crd_yaml()


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_headrace_operator_serves_liveness_reconciles_and_stops_on_sigterm(
    dsn: str, emulator: kmock.KubernetesEmulator, namespaces: Namespaces, tmp_path: Path
) -> None:
    port = free_port()
    kubeconfig = emulator_kubeconfig(tmp_path / "kubeconfig", str(emulator.url).rstrip("/"))
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HEADRACE_DATABASE_URL": dsn,
        "HEADRACE_WORKER_IMAGE": "ghcr.io/example/headrace:test",
        "HEADRACE_LIVENESS": f"http://127.0.0.1:{port}/healthz",
        "HEADRACE_OBSERVE_INTERVAL": "1",
        "HEADRACE_INGEST_URL": INGEST_URL,
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "headrace", "operator", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        kube = client_for(str(emulator.url))
        body = ij()
        body["metadata"]["resourceVersion"] = "1"
        await kube.ensure(IJS, body)
        while (await kube.get(JOBS, "default", "handbook-run-1")) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await kube.close()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert b"Created Job" in stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HEADRACE_LEADER_ELECTION_RETRY_PERIOD": "8"}, "retry_period < renew_deadline < lease_duration"),
        ({"HEADRACE_LEADER_ELECTION_LEASE_DURATION": "soon"}, "HEADRACE_LEADER_ELECTION_LEASE_DURATION"),
    ],
)
def test_leader_election_settings_are_checked_at_start(
    env: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HEADRACE_LEADER_ELECTION_ENABLED", "true")
    result = CliRunner().invoke(
        main,
        [
            "operator",
            "--database-url",
            "postgresql://h@localhost/x",
            "--worker-image",
            "headrace:test",
            "--ingest-url",
            "http://headrace-ingest.headrace.svc:8081",
        ],
    )
    assert result.exit_code == 2 and named in result.output, result.output
