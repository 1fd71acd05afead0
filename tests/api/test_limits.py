"""Per-principal rate limits and request size caps."""

from collections.abc import AsyncIterator, Callable

from headrace.api.settings import ApiSettings
from headrace.store.jobs import JobRecord
from tests.api.conftest import bearer, serve

JOB = "/v1/namespaces/team-a/ingestionjobs/docs"


async def test_rate_limit_is_per_principal(settings: Callable[..., ApiSettings], seeded: dict[str, JobRecord]) -> None:
    # One token per 1000 s: after the burst of 3, alice is refused for as long as this test can run.
    async with serve(settings(rate_limit_per_second=0.001, rate_limit_burst=3)) as client:
        statuses = [(await client.get(JOB, headers=bearer("alice-token"))).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        refused = await client.get(JOB, headers=bearer("alice-token"))
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert 900 <= int(refused.headers["retry-after"]) <= 1000
        # admin has a bucket of their own.
        assert (await client.get(JOB, headers=bearer("admin-token"))).status_code == 200


async def test_rejected_tokens_are_rate_limited_by_address(
    settings: Callable[..., ApiSettings], seeded: dict[str, JobRecord]
) -> None:
    async with serve(settings(rate_limit_per_second=0.001, rate_limit_burst=2)) as client:
        statuses = [(await client.get(JOB, headers=bearer(f"guess-{i}"))).status_code for i in range(3)]
        assert statuses == [401, 401, 429]


async def test_rate_limit_off(settings: Callable[..., ApiSettings], seeded: dict[str, JobRecord]) -> None:
    async with serve(settings(rate_limit_per_second=0, rate_limit_burst=1)) as client:
        for _ in range(5):
            assert (await client.get(JOB, headers=bearer("alice-token"))).status_code == 200


async def test_body_over_the_cap_is_413(settings: Callable[..., ApiSettings], seeded: dict[str, JobRecord]) -> None:
    async with serve(settings(max_body_bytes=1024)) as client:
        big = {"q": "zephyr", "uriPrefix": "x" * 2000}
        response = await client.post("/v1/search", json=big, headers=bearer("alice-token"))
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"q": "zephyr", "uriPrefix": "'
            for _ in range(10):
                yield b"x" * 200
            yield b'"}'

        streamed = await client.post(
            "/v1/search",
            content=chunks(),
            headers={**bearer("alice-token"), "content-type": "application/json"},
        )
        assert streamed.status_code == 413
        small = await client.post("/v1/search", json={"q": "zephyr"}, headers=bearer("alice-token"))
        assert small.status_code == 200


async def test_query_string_over_the_cap_is_414(
    settings: Callable[..., ApiSettings], seeded: dict[str, JobRecord]
) -> None:
    async with serve(settings(max_query_chars=256)) as client:
        response = await client.get("/v1/search", params={"q": "w " * 200}, headers=bearer("alice-token"))
        assert response.status_code == 414
        assert response.headers["content-type"] == "application/problem+json"
