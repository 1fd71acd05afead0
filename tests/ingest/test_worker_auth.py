"""The worker API knows a worker by its pod's token, and lets it act for exactly one IngestionJob.

On the real control plane (v1.24): the tokens are minted by the TokenRequest API as the kubelet and
`kubectl create token --audience headrace-ingest --bound-object-kind Pod` mint them, the Job controller
makes the pods, and the authenticator asks the API server as a ServiceAccount holding only the rules
the chart gives the worker API.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from headrace.api.auth import AuthUnavailable, Unauthenticated
from headrace.ingest.auth import KubernetesWorkerAuthenticator, NotAWorker, WorkerIdentity, seconds_left
from headrace.kubeapi import KubeApi, KubeSettings
from headrace.operator.kube import MERGE_PATCH
from tests.ingest.cluster import (
    AUDIENCE,
    TOKEN_SECONDS,
    controller_of,
    create_ingestion_job,
    create_job,
    create_pod,
    create_worker,
    delete_pod,
    ingest_kube_settings,
    pod_of,
    request,
    resign,
    token,
)
from tests.kube.controlplane import ControlPlane
from tests.sockets import free_port

pytestmark = pytest.mark.timeout(180)


class CountingKube(KubeApi):
    """The real client, counting the reviews it sends (what a token costs the API server)."""

    reviews = 0

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.reviews += 1
        return await super().create(path, body)


@pytest.fixture(scope="module")
async def settings(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> KubeSettings:
    return await ingest_kube_settings(control_plane, tmp_path_factory.mktemp("ingest"))


def authenticator(settings: KubeSettings, *, cache_seconds: float = 600) -> KubernetesWorkerAuthenticator:
    kube = CountingKube.from_settings(settings)
    return KubernetesWorkerAuthenticator(kube, audience=AUDIENCE, cache_seconds=cache_seconds)


@pytest.fixture
async def auth(settings: KubeSettings) -> AsyncIterator[KubernetesWorkerAuthenticator]:
    found = authenticator(settings)
    yield found
    await found.aclose()


def reviews(auth: KubernetesWorkerAuthenticator) -> int:
    kube = auth._kube
    assert isinstance(kube, CountingKube)
    return kube.reviews


async def test_a_worker_pods_token_identifies_exactly_its_own_ingestionjob(
    control_plane: ControlPlane, auth: KubernetesWorkerAuthenticator
) -> None:
    team_a, team_b = (
        await control_plane.create_namespace(prefix="team-a"),
        await control_plane.create_namespace(prefix="team-b"),
    )
    docs, wiki, other = await asyncio.gather(
        create_worker(control_plane, team_a, "docs"),
        create_worker(control_plane, team_a, "wiki"),
        create_worker(control_plane, team_b, "docs"),  # the same name in another namespace
    )
    for worker in (docs, wiki, other):
        identity = await auth.identify(
            await token(control_plane, worker.namespace, pod=worker.pod, audiences=[AUDIENCE])
        )
        # The pod's name and uid can only come from the review's user.extra: v1.24 fills them in.
        assert identity == WorkerIdentity(
            namespace=worker.namespace,
            job_name=worker.ingestion_job["metadata"]["name"],
            job_uid=worker.job_uid,
            pod_name=worker.pod_name,
            pod_uid=worker.pod_uid,
        )
    assert len({docs.job_uid, wiki.job_uid, other.job_uid}) == 3


@pytest.mark.parametrize("audiences", [["headrace"], ["vault", "other"], None], ids=["other", "others", "default"])
async def test_a_pod_token_for_another_audience_is_401(
    control_plane: ControlPlane, auth: KubernetesWorkerAuthenticator, audiences: list[str] | None
) -> None:
    namespace = await control_plane.create_namespace(prefix="team-a")
    worker = await create_worker(control_plane, namespace, "docs")
    with pytest.raises(Unauthenticated) as refused:
        await auth.identify(await token(control_plane, namespace, pod=worker.pod, audiences=audiences))
    assert refused.value.status == 401
    assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert AUDIENCE in refused.value.detail


async def test_no_token_or_a_malformed_one_is_401(auth: KubernetesWorkerAuthenticator) -> None:
    for bad in (None, "", "not-a-jwt", "a.b.c"):
        with pytest.raises(Unauthenticated):
            await auth.identify(bad)


async def test_a_token_not_bound_to_a_pod_is_403(
    control_plane: ControlPlane, auth: KubernetesWorkerAuthenticator
) -> None:
    namespace = await control_plane.create_namespace(prefix="team-a")
    await create_worker(control_plane, namespace, "docs")
    with pytest.raises(NotAWorker) as refused:
        await auth.identify(await token(control_plane, namespace, audiences=[AUDIENCE]))
    assert refused.value.status == 403
    assert "not bound to a pod" in refused.value.detail


async def test_a_tenants_own_pod_or_a_job_of_its_own_is_403(
    control_plane: ControlPlane, auth: KubernetesWorkerAuthenticator
) -> None:
    namespace = await control_plane.create_namespace(prefix="team-a")
    await create_worker(control_plane, namespace, "docs")  # a real worker beside them changes nothing
    pod = await create_pod(control_plane, namespace, "shell")
    with pytest.raises(NotAWorker, match="no Job controls it"):
        await auth.identify(await token(control_plane, namespace, pod=pod, audiences=[AUDIENCE]))

    job = await create_job(control_plane, namespace, "batch", owner=None)
    pod = await pod_of(control_plane, job)
    with pytest.raises(NotAWorker, match="not controlled by an IngestionJob"):
        await auth.identify(await token(control_plane, namespace, pod=pod, audiences=[AUDIENCE]))


async def test_a_job_naming_another_namespaces_ingestionjob_as_its_owner_is_refused(
    control_plane: ControlPlane, auth: KubernetesWorkerAuthenticator
) -> None:
    """Owner references are the tenant's to write, uid included: only the live owner counts.

    team-a's Job names team-b's IngestionJob (its name and uid) as controller, and team-a has an
    IngestionJob of that name too. Without the uid check the pod would pass for team-a's `docs`; it is
    never team-b's, as owners are looked up in the pod's own namespace. The garbage collector deletes
    such a Job once it notices, and the pod with it: the token is then refused as a gone pod's (401)
    rather than by the owner check (403).
    """
    team_a, team_b = (
        await control_plane.create_namespace(prefix="team-a"),
        await control_plane.create_namespace(prefix="team-b"),
    )
    victim = await create_ingestion_job(control_plane, team_b, "docs")
    await create_ingestion_job(control_plane, team_a, "docs")
    job = await create_job(control_plane, team_a, "docs-worker", owner=None)
    pod = await pod_of(control_plane, job)
    forged = await token(control_plane, team_a, pod=pod, audiences=[AUDIENCE])
    # Only now the forged owner: the garbage collector may delete the Job and pod from here on.
    await request(
        control_plane,
        "PATCH",
        f"/apis/batch/v1/namespaces/{team_a}/jobs/docs-worker",
        {"metadata": {"ownerReferences": [controller_of(victim)]}},
        content_type=MERGE_PATCH,
    )
    with pytest.raises((NotAWorker, Unauthenticated)):
        await auth.identify(forged)


async def test_the_token_of_a_deleted_pod_is_401_even_with_a_new_pod_of_its_name(
    control_plane: ControlPlane, settings: KubeSettings
) -> None:
    namespace = await control_plane.create_namespace(prefix="team-a")
    worker = await create_worker(control_plane, namespace, "docs")
    replayed = await token(control_plane, namespace, pod=worker.pod, audiences=[AUDIENCE])
    auth = authenticator(settings, cache_seconds=0)  # the cache is another test's subject
    try:
        assert (await auth.identify(replayed)).job_uid == worker.job_uid
        await delete_pod(control_plane, worker.pod)
        twin = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": worker.pod_name,
                "labels": worker.pod["metadata"]["labels"],
                "ownerReferences": worker.pod["metadata"]["ownerReferences"],
            },
            "spec": worker.pod["spec"],
        }
        await request(control_plane, "POST", f"/api/v1/namespaces/{namespace}/pods", twin)
        with pytest.raises(Unauthenticated):
            await auth.identify(replayed)
    finally:
        await auth.aclose()


async def test_an_expired_token_is_401(control_plane: ControlPlane, auth: KubernetesWorkerAuthenticator) -> None:
    namespace = await control_plane.create_namespace(prefix="team-a")
    worker = await create_worker(control_plane, namespace, "docs")
    issued = await token(control_plane, namespace, pod=worker.pod, audiences=[AUDIENCE])
    now = int(time.time())
    # Re-signed by the cluster's own key: unchanged, it is accepted, so the refusal below is the expiry's.
    assert (await auth.identify(resign(control_plane, issued))).job_uid == worker.job_uid
    expired = resign(control_plane, issued, iat=now - TOKEN_SECONDS - 60, nbf=now - TOKEN_SECONDS - 60, exp=now - 60)
    with pytest.raises(Unauthenticated):
        await auth.identify(expired)


async def test_an_accepted_token_is_remembered_no_longer_than_it_lives(control_plane: ControlPlane) -> None:
    namespace = await control_plane.create_namespace(prefix="team-a")
    pod = await create_pod(control_plane, namespace, "shell")
    issued = await token(control_plane, namespace, pod=pod, audiences=[AUDIENCE])
    now = time.time()
    left = seconds_left(issued, now)
    assert left is not None and TOKEN_SECONDS - 60 < left <= TOKEN_SECONDS
    assert seconds_left(resign(control_plane, issued, exp=int(now) - 1), now) == pytest.approx(-1, abs=1)
    assert seconds_left("not-a-jwt", now) is None


async def test_the_api_server_unreachable_is_503_with_retry_after(settings: KubeSettings) -> None:
    gone = settings.model_copy(update={"kube_api_url": f"https://127.0.0.1:{free_port()}"})
    auth = authenticator(gone)
    try:
        with pytest.raises(AuthUnavailable) as unavailable:
            await auth.identify("header.payload.signature")
    finally:
        await auth.aclose()
    assert unavailable.value.status == 503
    assert int(unavailable.value.headers["Retry-After"]) > 0


async def test_a_burst_with_one_token_costs_one_review_and_a_refusal_is_remembered(
    control_plane: ControlPlane, auth: KubernetesWorkerAuthenticator
) -> None:
    namespace = await control_plane.create_namespace(prefix="team-a")
    worker = await create_worker(control_plane, namespace, "docs")
    good = await token(control_plane, namespace, pod=worker.pod, audiences=[AUDIENCE])
    identities = await asyncio.gather(*(auth.identify(good) for _ in range(20)))
    assert {identity.job_uid for identity in identities} == {worker.job_uid}
    assert reviews(auth) == 1
    await auth.identify(good)
    assert reviews(auth) == 1

    unbound = await token(control_plane, namespace, audiences=[AUDIENCE])
    for _ in range(5):
        with pytest.raises(NotAWorker):
            await auth.identify(unbound)
    assert reviews(auth) == 2


async def test_admit_is_asked_before_an_unknown_token_costs_a_review(
    control_plane: ControlPlane, auth: KubernetesWorkerAuthenticator
) -> None:
    class Limited(Exception):
        pass

    def refuse() -> None:
        raise Limited

    with pytest.raises(Limited):
        await auth.identify(f"unknown-{uuid.uuid4()}", admit=refuse)
    assert reviews(auth) == 0


async def test_the_audience_is_required(tmp_path: Path) -> None:
    kube = KubeApi.from_settings(KubeSettings(kube_api_url="https://127.0.0.1:1", kube_token_file=tmp_path / "token"))
    try:
        with pytest.raises(ValueError, match="HEADRACE_INGEST_AUDIENCE"):
            KubernetesWorkerAuthenticator(kube, audience="", cache_seconds=1)
    finally:
        await kube.aclose()
