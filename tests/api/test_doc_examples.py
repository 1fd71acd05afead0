"""docs/api.md's search and RAG examples, replayed against the demo corpus: each one returns results."""

import json
import re
import shlex
from pathlib import Path

import pytest

from headrace.api.settings import ApiSettings
from headrace.store.db import Pool
from tests.api.conftest import serve
from tests.conftest import ingest_demo_corpus

ROOT = Path(__file__).resolve().parents[2]
CURL = re.compile(r'^curl -s "\$API(?P<path>[^"]+)"(?P<rest>.*)$')


def examples() -> list[tuple[str, dict[str, object] | None]]:
    """(path, JSON body or None) of every curl line in the Search and Retrieval sections."""
    text = (ROOT / "docs" / "api.md").read_text()
    sections = text.split("### Search", 1)[1].split("### Pagination", 1)[0]
    lines = [
        line.rstrip() for block in re.findall(r"```sh\n(.*?)```", sections, re.DOTALL) for line in block.splitlines()
    ]
    found = []
    for index, line in enumerate(lines):
        match = CURL.match(line)
        if not match:
            continue
        body = None
        following = lines[index + 1].strip() if index + 1 < len(lines) else ""
        if match["rest"].endswith("\\") and following.startswith("-d "):
            body = json.loads(shlex.split(following)[1])
        found.append((match["path"], body))
    return found


@pytest.mark.postgres
async def test_every_documented_search_returns_results(pool: Pool, dsn: str, tmp_path: Path) -> None:
    assert len(examples()) >= 7
    await ingest_demo_corpus(pool)
    settings = ApiSettings(database_url=dsn, listen_host="127.0.0.1", auth_mode="none")
    chunk_id = None
    async with serve(settings) as client:
        for path, body in examples():
            if "$CHUNK_ID" in path:
                assert chunk_id is not None
                path = path.replace("$CHUNK_ID", str(chunk_id))
            response = await (client.post(path, json=body) if body is not None else client.get(path))
            assert response.status_code == 200, (path, body, response.text)
            answer = response.json()
            results = answer.get("items", answer.get("passages"))
            assert results, (path, body)
            if "items" in answer:
                chunk_id = chunk_id or results[0]["chunkId"]
