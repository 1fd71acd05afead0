"""The one Kubernetes client (`headrace.kubeapi`) against the real API server: how it holds its connections."""

import asyncio
import os
from urllib.parse import urlsplit

import psutil
import pytest

from headrace.operator.kube import KubeClient
from tests.kube.controlplane import ControlPlane

pytestmark = pytest.mark.timeout(120)

CALLS = 100


def connections_to(port: int) -> set[tuple[str, int]]:
    """This process's established TCP connections to the API server's port, by their local address."""
    return {
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.Process(os.getpid()).net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    }


async def test_a_burst_of_calls_shares_one_connection(control_plane: ControlPlane) -> None:
    # The operator's burst of new IngestionJobs: over HTTP/1.1 every call in flight held a connection of
    # its own (up to the pool's 100), and the pool's work per call grew with them (kubeapi.KubeApi.open).
    port = urlsplit(control_plane.url).port
    assert port is not None
    namespace = await control_plane.create_namespace()
    before = connections_to(port)
    kube = KubeClient(control_plane.connection())
    try:
        answers = await asyncio.gather(
            *(kube.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts") for _ in range(CALLS))
        )
        opened = connections_to(port) - before
    finally:
        await kube.close()
    assert all(answer["kind"] == "ServiceAccountList" for answer in answers)
    # One connection (HTTP/1.1 opened 100); room for the session's other clients in this process, the
    # stand-in kubelet and its forwarders for the pods' API calls, which may open some meanwhile.
    assert 1 <= len(opened) <= 10, f"{CALLS} calls at once opened {len(opened)} connections to the API server"
