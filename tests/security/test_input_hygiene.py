"""A tenant feeding the API and the workers what they do not expect: HTML in documents, forged cursors,
odd header bytes, URIs longer than an index key. Each gets a 4xx problem or a failed document."""

import base64
import json
import uuid
import zipfile
from io import BytesIO
from pathlib import Path

import httpx
import pytest

from headrace.store import jobs, runs
from headrace.store.db import Pool
from headrace.store.documents import MAX_URI_BYTES
from headrace.store.jobs import JobRecord
from headrace.worker.loop import Worker
from headrace.worker.store import DirectStore
from tests.api.conftest import bearer, ingest
from tests.conftest import volume_spec

pytestmark = pytest.mark.postgres

ALICE = bearer("alice-token")
JOBS = "/v1/namespaces/team-a/ingestionjobs"
# Snippets are document text as written: a tag, closed or not, reaches them only HTML-escaped.
HOSTILE = "The zephyr crossed the weir & 1 < 2 said <img src=x onerror=alert(1)//"


def cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def assert_problem(response: httpx.Response, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_snippets_are_escaped_with_only_mark_tags(
    client: httpx.AsyncClient, pool: Pool, tmp_path: Path, seeded: dict[str, JobRecord]
) -> None:
    await ingest(pool, tmp_path / "xss", namespace="team-a", name="web", files={"page.html.txt": HOSTILE})
    found = await client.get("/v1/search", params={"q": "zephyr weir", "job": "web"}, headers=ALICE)
    assert found.status_code == 200, found.text
    (hit,) = found.json()["items"]
    snippet = hit["snippet"]
    assert "<img" not in snippet and "<script" not in snippet
    assert "&lt;img src=x onerror=alert" in snippet and "&amp; 1 &lt; 2" in snippet
    assert "<mark>zephyr</mark>" in snippet
    assert snippet.replace("<mark>", "").replace("</mark>", "").count("<") == 0


async def test_plain_text_snippets_on_request(
    client: httpx.AsyncClient, pool: Pool, tmp_path: Path, seeded: dict[str, JobRecord]
) -> None:
    await ingest(pool, tmp_path / "xss", namespace="team-a", name="web", files={"page.html.txt": HOSTILE})
    got = await client.get("/v1/search", params={"q": "zephyr", "job": "web", "highlight": "none"}, headers=ALICE)
    posted = await client.post("/v1/search", json={"q": "zephyr", "job": "web", "highlight": "none"}, headers=ALICE)
    for response in (got, posted):
        (hit,) = response.json()["items"]
        assert "<mark>" not in hit["snippet"] and "zephyr" in hit["snippet"]
        assert "\ue000" not in hit["snippet"]
    assert_problem(await client.get("/v1/search", params={"q": "x", "highlight": "js"}, headers=ALICE), 422)


async def test_a_document_cannot_forge_highlight_markers(
    client: httpx.AsyncClient, pool: Pool, tmp_path: Path, seeded: dict[str, JobRecord]
) -> None:
    text = "The zephyr \ue000 fake \ue001 markers by the weir."
    await ingest(pool, tmp_path / "forge", namespace="team-a", name="web", files={"page.txt": text})
    (hit,) = (await client.get("/v1/search", params={"q": "zephyr", "job": "web"}, headers=ALICE)).json()["items"]
    assert hit["snippet"].count("<mark>") == 1


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (JOBS, "docs\x00"),  # a jobs cursor holding NUL, which Postgres text cannot
        (JOBS, 7),  # the wrong kind
        (f"{JOBS}/docs/documents", 2**63),  # above int64
        (f"{JOBS}/docs/documents", 2**80),
        (f"{JOBS}/docs/documents", -1),
        (f"{JOBS}/docs/documents", "7"),
    ],
)
async def test_forged_cursors_are_400(
    client: httpx.AsyncClient, seeded: dict[str, JobRecord], path: str, value: object
) -> None:
    assert_problem(await client.get(path, params={"cursor": cursor(value)}, headers=ALICE))


@pytest.mark.parametrize("raw", [b"\xb2", b"\xb2\xb3", b"\xd9\xa3", b"1e3", b"-1", b" 5"])
async def test_odd_last_event_ids_are_400(client: httpx.AsyncClient, seeded: dict[str, JobRecord], raw: bytes) -> None:
    response = await client.get(f"{JOBS}/docs/events", headers=[*ALICE.items(), ("Last-Event-ID", raw)])
    assert_problem(response)


async def test_uris_longer_than_an_index_key_fail_as_documents(
    client: httpx.AsyncClient, pool: Pool, tmp_path: Path, seeded: dict[str, JobRecord]
) -> None:
    root = tmp_path / "long"
    deep = root / "/".join(["d" * 250] * 11)  # a 2.7 KB path of legal names
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_text("A zephyr far below.")
    archive = BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("e" * 3000 + ".txt", "A zephyr in a long-named entry.")
        zf.writestr("short.txt", "A zephyr in a short-named entry.")
    (root / "bundle.zip").write_bytes(archive.getvalue())
    (root / "fine.txt").write_text("A zephyr near the top.")
    job = await jobs.register_job(
        pool, uid=uuid.uuid4(), namespace="team-a", name="long", generation=1, spec=volume_spec(".")
    )
    await runs.start_run(pool, job, reason="test")
    assert await Worker(DirectStore(pool, job.uid), volume_root=root, poll_seconds=0.02, lease_seconds=10).run() == 0

    listed = await client.get(f"{JOBS}/long/documents", params={"limit": 50}, headers=ALICE)
    assert listed.status_code == 200
    docs = {d["uri"]: d for d in listed.json()["items"]}
    failed = [d for d in docs.values() if d["state"] == "failed"]
    assert len(failed) == 2
    assert all(f"over the {MAX_URI_BYTES}-byte limit" in d["error"] for d in failed)
    assert all(len(d["uri"].encode()) <= MAX_URI_BYTES and "#sha256=" in d["uri"] for d in failed)
    assert docs["fine.txt"]["state"] == docs["bundle.zip!/short.txt"]["state"] == "ingested"
