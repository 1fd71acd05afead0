"""Job status, lists, documents, and the shape of errors."""

from pathlib import Path

import httpx

from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from tests.api.conftest import bearer, ingest

ALICE = bearer("alice-token")


async def test_job_status_has_phase_counts_percentage_and_runs(
    client: httpx.AsyncClient, seeded: dict[str, JobRecord]
) -> None:
    response = await client.get("/v1/namespaces/team-a/ingestionjobs/docs", headers=ALICE)
    assert response.status_code == 200
    job = response.json()
    assert job["uid"] == str(seeded["team-a"].uid)
    assert job["phase"] == "Succeeded"
    assert job["progress"] == {"total": 3, "succeeded": 2, "failed": 1, "pending": 0, "percent": 100}
    assert job["summary"]["added"] == 2
    assert job["discoveryDone"] is True
    assert job["startTime"] and job["completionTime"]
    assert [run["run"] for run in job["runs"]] == [1]
    assert job["runs"][0]["reason"] == "test"


async def test_list_jobs_pages_by_name(client: httpx.AsyncClient, pool: Pool, tmp_path: Path) -> None:
    for name in ("c-docs", "a-docs", "b-docs"):
        await ingest(pool, tmp_path, namespace="team-a", name=name, files={"x.txt": f"{name} text"})
    first = (await client.get("/v1/namespaces/team-a/ingestionjobs?limit=2", headers=ALICE)).json()
    assert [j["name"] for j in first["items"]] == ["a-docs", "b-docs"]
    assert first["items"][0]["progress"]["percent"] == 100
    second = (
        await client.get(f"/v1/namespaces/team-a/ingestionjobs?limit=2&cursor={first['nextCursor']}", headers=ALICE)
    ).json()
    assert [j["name"] for j in second["items"]] == ["c-docs"]
    assert second["nextCursor"] is None


async def test_documents_filter_by_state_with_failure_reasons(
    client: httpx.AsyncClient, seeded: dict[str, JobRecord]
) -> None:
    url = "/v1/namespaces/team-a/ingestionjobs/docs/documents"
    failed = (await client.get(url, params={"state": "failed"}, headers=ALICE)).json()
    assert [(d["uri"], d["state"]) for d in failed["items"]] == [("notes/empty.txt", "failed")]
    assert "no text" in failed["items"][0]["error"]
    ingested = (await client.get(url, params={"state": "ingested", "limit": 1}, headers=ALICE)).json()
    assert len(ingested["items"]) == 1 and ingested["items"][0]["chunks"] >= 1
    rest = (await client.get(url, params={"state": "ingested", "cursor": ingested["nextCursor"]}, headers=ALICE)).json()
    uris = {d["uri"] for d in ingested["items"] + rest["items"]}
    assert uris == {"reports/glacier.txt", "reports/river.md"}


async def test_unknown_job_is_a_404_problem(client: httpx.AsyncClient, seeded: dict[str, JobRecord]) -> None:
    for path in ("", "/documents", "/events"):
        response = await client.get(f"/v1/namespaces/team-a/ingestionjobs/nope{path}", headers=ALICE)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"] == "ingestionjob team-a/nope not found"


async def test_errors_are_problem_json(client: httpx.AsyncClient) -> None:
    unknown = await client.get("/v2/nothing-here")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "no route /v2/nothing-here",
        "instance": "/v2/nothing-here",
    }
    invalid = await client.get("/v1/namespaces/team-a/ingestionjobs?limit=0", headers=ALICE)
    assert invalid.status_code == 422
    assert invalid.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in invalid.json()["errors"]] == ["query.limit"]
    bad_name = await client.get("/v1/namespaces/Team_A/ingestionjobs", headers=ALICE)
    assert bad_name.status_code == 422
    assert bad_name.json()["errors"][0]["field"] == "path.ns"
    wrong_method = await client.delete("/v1/namespaces/team-a/ingestionjobs/docs", headers=ALICE)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "GET"
    search_method = await client.put("/v1/search", headers=ALICE)
    assert search_method.headers["allow"] == "GET, POST"
    unknown_parameter = await client.get("/v1/search?q=zephyr&namespce=team-a", headers=ALICE)
    assert unknown_parameter.status_code == 422
    assert unknown_parameter.json()["errors"] == [{"field": "query.namespce", "message": "unknown parameter"}]
    assert wrong_method.headers["content-type"] == "application/problem+json"


async def test_forged_cursor_is_a_400(client: httpx.AsyncClient, seeded: dict[str, JobRecord]) -> None:
    for url in (
        "/v1/namespaces/team-a/ingestionjobs?cursor=bm90LWpzb24",
        "/v1/namespaces/team-a/ingestionjobs/docs/documents?cursor=InN0cmluZyI",
        "/v1/search?q=zephyr&cursor=WzEsICJ4Il0",
    ):
        response = await client.get(url, headers=ALICE)
        assert response.status_code == 400, url
        assert response.json()["detail"] == "cursor is not one this server returned"
