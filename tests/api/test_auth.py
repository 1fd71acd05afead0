"""Authentication (TokenReview) and authorization (SubjectAccessReview) against a fake cluster."""

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import kmock
import pytest
from pydantic import ValidationError

from headrace.api.settings import ApiSettings
from headrace.store.jobs import JobRecord
from tests.api.conftest import Cluster, bearer, reviews, serve

JOB = "/v1/namespaces/team-a/ingestionjobs/docs"


async def test_no_token_is_401_with_a_bearer_challenge(client: httpx.AsyncClient, kmock: kmock.RawHandler) -> None:
    response = await client.get(JOB)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"
    assert not list(kmock)  # nothing to review without a token


async def test_token_the_cluster_rejects_is_401(client: httpx.AsyncClient, seeded: dict[str, JobRecord]) -> None:
    response = await client.get(JOB, headers=bearer("forged-token"))
    assert response.status_code == 401
    assert response.json()["detail"] == "the bearer token was not accepted by the cluster"


async def test_allowed_namespace_is_readable(client: httpx.AsyncClient, seeded: dict[str, JobRecord]) -> None:
    assert (await client.get(JOB, headers=bearer("alice-token"))).status_code == 200
    assert (await client.get(JOB, headers=bearer("admin-token"))).status_code == 200


async def test_other_namespace_is_403_whether_or_not_the_job_exists(
    client: httpx.AsyncClient, seeded: dict[str, JobRecord]
) -> None:
    existing = await client.get("/v1/namespaces/team-b/ingestionjobs/docs", headers=bearer("alice-token"))
    missing = await client.get("/v1/namespaces/team-b/ingestionjobs/nothing", headers=bearer("alice-token"))
    assert existing.status_code == missing.status_code == 403
    assert existing.json()["detail"] == "'alice' may not get ingestionjobs.headrace.io in namespace 'team-b'"
    assert missing.json()["detail"] == existing.json()["detail"]
    for path in ("", "/docs/documents", "/docs/events"):
        response = await client.get(f"/v1/namespaces/team-b/ingestionjobs{path}", headers=bearer("alice-token"))
        assert response.status_code == 403, path


async def test_search_returns_only_readable_namespaces(client: httpx.AsyncClient, seeded: dict[str, JobRecord]) -> None:
    def namespaces(response: httpx.Response) -> set[str]:
        assert response.status_code == 200, response.text
        return {hit["namespace"] for hit in response.json()["items"]}

    assert namespaces(await client.get("/v1/search?q=zephyr", headers=bearer("alice-token"))) == {"team-a"}
    assert namespaces(await client.get("/v1/search?q=zephyr", headers=bearer("bob-token"))) == {"team-b"}
    assert namespaces(await client.get("/v1/search?q=zephyr", headers=bearer("admin-token"))) == {"team-a", "team-b"}
    assert namespaces(await client.get("/v1/search?q=zephyr", headers=bearer("eve-token"))) == set()
    # Team B's words are not findable by alice, even by their exact terms.
    assert namespaces(await client.get("/v1/search?q=combination&mode=keyword", headers=bearer("alice-token"))) == set()
    assert "team-b" not in namespaces(await client.get("/v1/search?q=combination", headers=bearer("alice-token")))


async def test_search_naming_a_forbidden_namespace_is_403(
    client: httpx.AsyncClient, seeded: dict[str, JobRecord]
) -> None:
    get = await client.get("/v1/search?q=zephyr&namespace=team-a&namespace=team-b", headers=bearer("alice-token"))
    post = await client.post(
        "/v1/search", json={"q": "zephyr", "namespaces": ["team-b"]}, headers=bearer("alice-token")
    )
    assert get.status_code == post.status_code == 403


async def test_decisions_are_cached(
    client: httpx.AsyncClient, kmock: kmock.RawHandler, seeded: dict[str, JobRecord]
) -> None:
    for _ in range(3):
        assert (await client.get(JOB, headers=bearer("alice-token"))).status_code == 200
        assert (await client.get(JOB, headers=bearer("forged-token"))).status_code == 401
    assert len(reviews(kmock, "tokenreviews")) == 2
    assert len(reviews(kmock, "subjectaccessreviews")) == 1


async def test_a_burst_with_a_new_token_costs_one_review_of_each_kind(
    client: httpx.AsyncClient, cluster: Cluster, kmock: kmock.RawHandler, seeded: dict[str, JobRecord]
) -> None:
    cluster.gate.clear()  # hold the reviews until the whole burst has asked
    burst = [asyncio.create_task(client.get(JOB, headers=bearer("alice-token"))) for _ in range(10)]
    await asyncio.sleep(0.2)
    cluster.gate.set()
    assert [r.status_code for r in await asyncio.gather(*burst)] == [200] * 10
    assert len(reviews(kmock, "tokenreviews")) == 1
    assert len(reviews(kmock, "subjectaccessreviews")) == 1


async def test_without_cache_every_request_is_reviewed(
    settings: Callable[..., ApiSettings], kmock: kmock.RawHandler, seeded: dict[str, JobRecord]
) -> None:
    async with serve(settings(auth_cache_seconds=0)) as client:
        for _ in range(2):
            assert (await client.get(JOB, headers=bearer("alice-token"))).status_code == 200
    assert len(reviews(kmock, "tokenreviews")) == len(reviews(kmock, "subjectaccessreviews")) == 2


async def test_reviews_are_sent_with_the_api_serviceaccount_token(
    client: httpx.AsyncClient, cluster: Cluster, kmock: kmock.RawHandler, seeded: dict[str, JobRecord]
) -> None:
    assert (await client.get(JOB, headers=bearer("alice-token"))).status_code == 200
    assert cluster.unauthorized_calls == 0
    review = reviews(kmock, "subjectaccessreviews")[0].data
    assert review["spec"]["resourceAttributes"] == {
        "verb": "get",
        "group": "headrace.io",
        "resource": "ingestionjobs",
        "namespace": "team-a",
    }
    assert review["spec"]["user"] == "alice"
    assert review["spec"]["uid"] == "uid-alice"


async def test_unreachable_api_server_is_503_not_401(
    settings: Callable[..., ApiSettings], seeded: dict[str, JobRecord]
) -> None:
    async with serve(settings(kube_api_url="http://127.0.0.1:9")) as client:
        response = await client.get(JOB, headers=bearer("alice-token"))
    assert response.status_code == 503
    assert response.headers["retry-after"]


async def test_static_token_mode(
    settings: Callable[..., ApiSettings], tmp_path: Path, seeded: dict[str, JobRecord], kmock: kmock.RawHandler
) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    async with serve(settings(auth_mode="token", auth_token_file=secret)) as client:
        assert (await client.get(JOB, headers=bearer("s3cret"))).status_code == 200
        assert (
            await client.get("/v1/namespaces/team-b/ingestionjobs/docs", headers=bearer("s3cret"))
        ).status_code == 200
        assert (await client.get(JOB, headers=bearer("s3cret-not"))).status_code == 401
        assert (await client.get(JOB)).status_code == 401
    assert not list(kmock)


async def test_no_auth_mode_serves_loopback(settings: Callable[..., ApiSettings], seeded: dict[str, JobRecord]) -> None:
    async with serve(settings(auth_mode="none", listen_host="127.0.0.1")) as client:
        assert (await client.get(JOB)).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "api.example.com"])
def test_no_auth_mode_is_refused_off_loopback(settings: Callable[..., ApiSettings], host: str) -> None:
    with pytest.raises(ValidationError, match="only allowed on a loopback address"):
        settings(auth_mode="none", listen_host=host)


def test_token_mode_needs_a_token(settings: Callable[..., ApiSettings]) -> None:
    with pytest.raises(ValidationError, match="needs HEADRACE_AUTH_TOKEN"):
        settings(auth_mode="token")


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [("10.96.0.1", "443", "https://10.96.0.1:443"), ("fd00::1", "6443", "https://[fd00::1]:6443")],
)
def test_in_cluster_api_server_address(
    settings: Callable[..., ApiSettings], monkeypatch: pytest.MonkeyPatch, host: str, port: str, url: str
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    assert settings(kube_api_url=None).kubernetes_url() == url


def test_outside_a_cluster_kubernetes_mode_needs_an_address(
    settings: Callable[..., ApiSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValueError, match="HEADRACE_KUBE_API_URL"):
        settings(kube_api_url=None).kubernetes_url()
