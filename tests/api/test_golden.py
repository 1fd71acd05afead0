"""The API's answers over a fixed corpus, byte for byte: job status, job lists, the event stream and
search in every mode, against answers recorded in tests/data/golden/api/.

A refactor of the store, the run lifecycle or search must leave these bytes alone. Each answer is
the response's status line, its content type and its body exactly as sent, after `normalise` masked
what differs from one run of the test to the next and nothing else:

- RFC 3339 timestamps (`createdAt`, `startTime`, an event's `time`, ...) become `<time>`;
- UUIDs (a job's `uid`) become `<uuid>`;
- ids Postgres generates from sequences, the log entries' `id` (and their SSE `id:` line) and search
  hits' `chunkId`, become `<event-id:N>` and `<chunk-id:N>`, N counting from 1 in order of first
  appearance in the answer, so two mentions of one id still read as the same;
- a cursor (base64 of JSON) becomes `<cursor:...>` with its decoded JSON inside, a search cursor's
  chunk id and a document list's document id masked as above (`<document-id:N>`); a job list's
  cursor is a job's name, kept;
- the test's temporary folder of source volumes (named in a failed discovery's error) becomes
  `<volumes>`;
- SSE comment lines (`: ping ...` keep-alives, sent on a timer) are dropped.

`HEADRACE_UPDATE_GOLDEN=1` writes the answers instead of comparing them (docs/testing.md).
"""

import base64
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import httpx

from headrace.store import jobs, runs
from headrace.store.db import Pool
from headrace.worker.loop import Worker
from headrace.worker.store import DirectStore
from tests.api.conftest import TEAM_A, TEAM_B, bearer, ingest
from tests.conftest import volume_spec

GOLDEN = Path(__file__).parent.parent / "data" / "golden" / "api"
UPDATE = os.environ.get("HEADRACE_UPDATE_GOLDEN") == "1"

ADMIN = bearer("admin-token")
ALICE = bearer("alice-token")

_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EVENT_ID = re.compile(r'(?m)^(id: )(\d+)(\r?)$|("id": ?)(\d+)')
_CHUNK_ID = re.compile(r'("chunkId":)(\d+)')
_CURSOR = re.compile(r'("nextCursor":)"([A-Za-z0-9_-]+)"')
_COMMENT = re.compile(r"(?m)^:[^\r\n]*\r?\n")


class Ids:
    """Sequence-generated ids of one kind, numbered in order of first appearance."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.seen: dict[str, int] = {}

    def __call__(self, value: str) -> str:
        return f"<{self.kind}:{self.seen.setdefault(value, len(self.seen) + 1)}>"


def normalise(body: str) -> str:
    """`body` with what varies between runs of the test masked (see the module's docstring)."""
    events, chunks, documents = Ids("event-id"), Ids("chunk-id"), Ids("document-id")

    def cursor(match: re.Match[str]) -> str:
        encoded = match[2]
        fields = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        if isinstance(fields, list):  # a search page's: [score, chunk id, statistics?]
            fields[1] = chunks(str(fields[1]))
        elif isinstance(fields, int):  # a document list's: the last document's id
            fields = documents(str(fields))
        return f'{match[1]}"<cursor:{json.dumps(fields)}>"'

    body = _COMMENT.sub("", body)
    body = _CHUNK_ID.sub(lambda m: m[1] + chunks(m[2]), body)
    body = _CURSOR.sub(cursor, body)
    body = _EVENT_ID.sub(lambda m: f"{m[1]}{events(m[2])}{m[3]}" if m[1] else m[4] + events(m[5]), body)
    body = _TIME.sub("<time>", body)
    return _UUID.sub("<uuid>", body)


def answer(response: httpx.Response, volumes: Path) -> str:
    """The recorded form of a response: status, content type, and the normalised body."""
    body = normalise(response.text.replace(str(volumes), "<volumes>"))
    return f"{response.status_code}\n{response.headers['content-type']}\n\n{body}"


def readable(recorded: str) -> Any:
    """A recorded answer as structured data, so a mismatch shows as a readable diff first."""
    head, _, body = recorded.partition("\n\n")
    if "event-stream" in head:
        return [head, *body.replace("\r\n", "\n").split("\n\n")]
    try:
        return [head, json.loads(body)]
    except ValueError:
        return [head, body]


async def run_job(pool: Pool, root: Path, *, namespace: str, name: str, files: dict[str, str], **spec: Any) -> None:
    """Register a job, start a run, then a second one that supersedes it, and work the second to its end."""
    folder = root / namespace / name
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    job = await jobs.register_job(
        pool,
        uid=uuid.uuid4(),
        namespace=namespace,
        name=name,
        generation=1,
        spec=volume_spec(f"{namespace}/{name}", workers={"batchSize": 2}, **spec),
    )
    await runs.start_run(pool, job, reason="created")
    await runs.start_run(pool, job, reason="spec changed")
    # One task at a time: the answers list documents and events in the order they were stored.
    worker = Worker(DirectStore(pool, job.uid), volume_root=root, poll_seconds=0.02, lease_seconds=10, tasks_at_once=1)
    code = await worker.run()
    assert code == 0


RIVERS = {
    f"rivers/{name}.txt": f"The {name} river carries {cargo}. A zephyr over the {name} slows the barges."
    for name, cargo in [
        ("amber", "timber to the mill"),
        ("birch", "grain and the mill's flour"),
        ("cedar", "stone for the headrace"),
        ("delta", "salt"),
        ("ember", "coal for the forge"),
    ]
}


async def ingest_corpus(pool: Pool, root: Path) -> None:
    """A fixed corpus covering each way a run ends, ingested by the real worker in this process:

    - team-a/docs and team-b/docs (tests/api/conftest.py's): succeeded, team-a's with one failed document;
    - team-a/rivers: five documents, its first run superseded by a second that succeeded;
    - team-a/strict: a failed document more than failurePolicy allows (FailurePolicyExceeded);
    - team-a/missing: a folder that does not exist (DiscoveryFailed);
    - team-a/waiting: registered, never run.
    """
    await ingest(pool, root, namespace="team-a", name="docs", files=TEAM_A)
    await ingest(pool, root, namespace="team-b", name="docs", files=TEAM_B)
    await run_job(pool, root, namespace="team-a", name="rivers", files=RIVERS)
    await ingest(
        pool,
        root,
        namespace="team-a",
        name="strict",
        files={"ok.txt": "A mill by the ford.", "empty.txt": ""},
        failurePolicy={"maxFailedDocuments": 0},
    )
    await ingest(pool, root, namespace="team-a", name="missing", files={}, retries={"maxAttempts": 1})
    await jobs.register_job(
        pool,
        uid=uuid.uuid4(),
        namespace="team-a",
        name="waiting",
        generation=1,
        spec=volume_spec("team-a/waiting"),
    )


class Answers:
    """Each answer checked against its recording (or recorded, with HEADRACE_UPDATE_GOLDEN=1); every
    mismatch is reported at the end, not only the first."""

    def __init__(self, client: httpx.AsyncClient, volumes: Path) -> None:
        self.client = client
        self.volumes = volumes
        self.names: list[str] = []
        self.mismatches: list[tuple[str, Any, Any]] = []

    async def check(self, name: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await self.client.request(method, url, **kwargs)
        assert name not in self.names, name
        self.names.append(name)
        got = answer(response, self.volumes)
        path = GOLDEN / f"{name}.txt"
        if UPDATE:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(got.encode())
        elif not path.exists():
            self.mismatches.append((name, "missing: record it with HEADRACE_UPDATE_GOLDEN=1", readable(got)))
        elif (recorded := path.read_bytes().decode()) != got:
            self.mismatches.append((name, readable(recorded), readable(got)))
        return response


async def test_api_answers_are_unchanged(client: httpx.AsyncClient, pool: Pool, tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"
    await ingest_corpus(pool, volumes)
    answers = Answers(client, volumes)
    await job_answers(answers)
    await event_answers(answers)
    for mode in ["keyword", "hybrid", "semantic"]:
        await search_answers(answers, mode)
    if not UPDATE:
        stale = sorted({p.stem for p in GOLDEN.glob("*.txt")} - set(answers.names))
        assert not stale, f"recorded answers no request gives: {stale}"
    # Structured first, so that a mismatch reads as a diff; then the bytes.
    assert [(name, recorded) for name, recorded, _ in answers.mismatches] == [
        (name, got) for name, _, got in answers.mismatches
    ]
    assert not answers.mismatches


async def job_answers(answers: Answers) -> None:
    base = "/v1/namespaces/team-a/ingestionjobs"
    await answers.check("jobs-list-team-a", "GET", base, headers=ALICE)
    page = await answers.check("jobs-list-team-a-page-1", "GET", base, params={"limit": 2}, headers=ALICE)
    params = {"limit": 2, "cursor": page.json()["nextCursor"]}
    await answers.check("jobs-list-team-a-page-2", "GET", base, params=params, headers=ALICE)
    await answers.check("jobs-list-team-b", "GET", "/v1/namespaces/team-b/ingestionjobs", headers=ADMIN)
    for name in ["docs", "rivers", "strict", "missing", "waiting", "absent"]:
        await answers.check(f"job-team-a-{name}", "GET", f"{base}/{name}", headers=ALICE)
    await answers.check("job-team-b-docs", "GET", "/v1/namespaces/team-b/ingestionjobs/docs", headers=ADMIN)
    await answers.check("job-team-b-docs-forbidden", "GET", "/v1/namespaces/team-b/ingestionjobs/docs", headers=ALICE)
    await answers.check("documents-team-a-docs", "GET", f"{base}/docs/documents", headers=ALICE)
    page = await answers.check(
        "documents-team-a-rivers-page-1", "GET", f"{base}/rivers/documents", params={"limit": 3}, headers=ALICE
    )
    params = {"limit": 3, "cursor": page.json()["nextCursor"]}
    await answers.check(
        "documents-team-a-rivers-page-2", "GET", f"{base}/rivers/documents", params=params, headers=ALICE
    )
    params = {"state": "failed"}
    await answers.check(
        "documents-team-a-strict-failed", "GET", f"{base}/strict/documents", params=params, headers=ALICE
    )


async def event_answers(answers: Answers) -> None:
    base = "/v1/namespaces/team-a/ingestionjobs"
    for name in ["docs", "strict", "missing"]:
        await answers.check(f"events-team-a-{name}", "GET", f"{base}/{name}/events", headers=ALICE)
    replay = await answers.check("events-team-a-rivers", "GET", f"{base}/rivers/events", headers=ALICE)
    second_run_started = re.findall(r"(?m)^id: (\d+)", replay.text)[1]
    headers = {**ALICE, "Last-Event-ID": second_run_started}
    await answers.check("events-team-a-rivers-resumed", "GET", f"{base}/rivers/events", headers=headers)


async def search_answers(answers: Answers, mode: str) -> None:
    for q in ["zephyr", "mill", '"mill wheel" or glacier', "which river carries coal?"]:
        label = re.sub(r"[^a-z]+", "-", q.lower()).strip("-")
        params = {"q": q, "mode": mode}
        await answers.check(f"search-{mode}-{label}", "GET", "/v1/search", params=params, headers=ADMIN)
    params = {"q": "zephyr mill", "mode": mode, "limit": 3}
    first = await answers.check(f"search-{mode}-page-1", "GET", "/v1/search", params=params, headers=ADMIN)
    assert first.json()["nextCursor"] is not None
    params = {**params, "cursor": first.json()["nextCursor"]}
    await answers.check(f"search-{mode}-page-2", "GET", "/v1/search", params=params, headers=ADMIN)
    body = {"q": "zephyr", "mode": mode, "namespaces": ["team-a"], "uriPrefix": "rivers/", "highlight": "none"}
    await answers.check(f"search-{mode}-post-filtered", "POST", "/v1/search", json=body, headers=ALICE)
    params = {"q": "zephyr", "mode": mode}
    await answers.check(f"search-{mode}-alice", "GET", "/v1/search", params=params, headers=ALICE)
