"""The operator's Kubernetes client against kmock's emulator: which answers are errors and which are "later"."""

import asyncio
import socket
from datetime import UTC, datetime

import kmock
import kopf
import pytest
from prometheus_client import REGISTRY

from headrace.kubeapi import KubeError
from headrace.operator import reconcile
from headrace.operator.kube import JOBS, RETRY_DELAY, KubeClient
from headrace.operator.reconcile import Operator
from tests.operator.conftest import ij
from tests.operator.test_reconcile import handle

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
JOBS_URL = "post /apis/batch/v1/namespaces/default/jobs"


def requests_counted(verb: str, code: str) -> float:
    """headrace_operator_kubernetes_requests_total for this verb and code so far."""
    labels = {"verb": verb, "code": code}
    return REGISTRY.get_sample_value("headrace_operator_kubernetes_requests_total", labels) or 0.0


def slow_once(emulator: kmock.KubernetesEmulator, pattern: str, seconds: float) -> list[float]:
    """Make the first matching request hang for `seconds`; later ones reach the emulator as usual."""
    calls: list[float] = []

    async def hang() -> None:
        calls.append(seconds)
        if len(calls) == 1:
            await asyncio.sleep(seconds)

    emulator[pattern] << hang
    return calls


async def test_timeout_is_a_temporary_error_with_a_short_delay(
    op: Operator, emulator: kmock.KubernetesEmulator
) -> None:
    # An API server too busy to answer in time. As a plain TimeoutError, kopf would retry the handler
    # only after its default 60 s backoff: jobs created in a burst got their worker Job a minute late.
    # The client's timeout leaves the retry's requests room on a loaded machine; the hang outlasts it.
    slow_once(emulator, JOBS_URL, seconds=10)
    busy = Operator(pool=op.pool, kube=KubeClient(op.kube.connection, timeout=2), config=op.config)
    raw = ij()
    try:
        with pytest.raises(kopf.TemporaryError) as caught:
            await handle(reconcile.apply_spec, busy, raw, NOW)
        assert caught.value.delay == RETRY_DELAY

        # The retry, once the server answers again, creates the Job.
        await handle(reconcile.apply_spec, busy, raw, NOW)
    finally:
        await busy.kube.close()
    assert not emulator.objects["batch/v1/jobs", "default", "handbook-run-1"].deleted


@pytest.mark.parametrize("status", [429, 503])
async def test_transient_status_is_a_temporary_error(
    op: Operator, emulator: kmock.KubernetesEmulator, status: int
) -> None:
    emulator[JOBS_URL] << status
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x", "namespace": "default"}}
    before = requests_counted("create", str(status))
    with pytest.raises(kopf.TemporaryError) as caught:
        await op.kube.ensure(JOBS, manifest)
    assert caught.value.delay == RETRY_DELAY
    assert requests_counted("create", str(status)) == before + 1


async def test_no_answer_is_a_temporary_error_counted_as_error() -> None:
    # A port bound but not listening: the connection is refused, so the call gets no answer at all.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        kube = KubeClient(kopf.ConnectionInfo(server=f"http://127.0.0.1:{closed.getsockname()[1]}"))
        before = requests_counted("get", "error")
        try:
            with pytest.raises(kopf.TemporaryError) as caught:
                await kube.get(JOBS, "default", "x")
        finally:
            await kube.close()
    assert caught.value.delay == RETRY_DELAY
    assert requests_counted("get", "error") == before + 1


async def test_a_new_login_is_used_by_the_next_call(emulator: kmock.KubernetesEmulator) -> None:
    # kopf logs in again when a token expires: the next call carries the new credentials.
    kube = KubeClient(kopf.ConnectionInfo(server=str(emulator.url), token="old"))
    try:
        await kube.get(JOBS, "default", "x")
        kube.connect(kopf.ConnectionInfo(server=str(emulator.url), token="new"))
        await kube.get(JOBS, "default", "x")
    finally:
        await kube.close()
    sent = [
        request.headers.get("Authorization") for request in emulator["get /apis/batch/v1/namespaces/default/jobs/x"]
    ]
    assert sent[-2:] == ["Bearer old", "Bearer new"]


async def test_refusal_is_an_error_not_a_retry(op: Operator, emulator: kmock.KubernetesEmulator) -> None:
    # A request the server rejects (here: 403) will not get better by retrying it soon.
    emulator[JOBS_URL] << 403
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x", "namespace": "default"}}
    with pytest.raises(KubeError) as caught:
        await op.kube.ensure(JOBS, manifest)
    assert caught.value.status == 403
