"""`headrace search` output for people and programs: job and namespace on every hit, scores that tell hits
apart, -o json|yaml|wide, --full, weak hits marked, -n for the namespace and -l for the limit."""

import json
import uuid
from pathlib import Path

import yaml

from headrace.model import IngestionJobSpec
from headrace.store import vectors
from headrace.store.db import Pool
from headrace.store.jobs import register_job
from tests.api.conftest import TEAM_A, TEAM_B, ingest
from tests.cli.test_errors import headrace


async def two_teams(pool: Pool, root: Path) -> None:
    await ingest(pool, root, namespace="team-a", name="reports", files=TEAM_A)
    await ingest(pool, root, namespace="team-b", name="vault", files=TEAM_B)


async def test_each_hit_names_its_job_and_namespace_and_json_is_whole(pool: Pool, dsn: str, tmp_path: Path) -> None:
    await two_teams(pool, tmp_path)
    text = headrace("search", "zephyr", "--mode", "keyword", "--database-url", dsn)
    assert text.returncode == 0, text.stderr
    assert "team-a/reports" in text.stdout and "team-b/vault" in text.stdout

    done = headrace("search", "zephyr", "--mode", "keyword", "-o", "json", "--full", "--database-url", dsn)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)  # nothing but the document on stdout
    assert document["query"] == "zephyr" and document["mode"] == "keyword"
    jobs = {(hit["namespace"], hit["job"]) for hit in document["hits"]}
    assert jobs == {("team-a", "reports"), ("team-b", "vault")}
    secret = next(hit for hit in document["hits"] if hit["job"] == "vault")
    assert secret["text"] == TEAM_B["secret.txt"]
    assert secret["weak"] is False and "zephyr" in secret["snippet"] and "\ue000" not in secret["snippet"]
    scores = [hit["score"] for hit in document["hits"]]
    assert scores == sorted(scores, reverse=True)


async def test_namespace_is_dash_n_and_limit_is_dash_l(pool: Pool, dsn: str, tmp_path: Path) -> None:
    await two_teams(pool, tmp_path)
    done = headrace("search", "zephyr", "-n", "team-b", "-l", "1", "-o", "yaml", "--database-url", dsn)
    assert done.returncode == 0, done.stderr
    hits = yaml.safe_load(done.stdout)["hits"]
    assert [(hit["namespace"], hit["uri"]) for hit in hits] == [("team-b", "secret.txt")]


async def test_a_nonsense_query_gets_hits_marked_weak(pool: Pool, dsn: str, tmp_path: Path) -> None:
    await two_teams(pool, tmp_path)
    done = headrace("search", "zzyzxqq", "--mode", "semantic", "-o", "json", "--database-url", dsn)
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)["hits"]
    assert hits and all(hit["weak"] for hit in hits)
    text = headrace("search", "zzyzxqq", "--mode", "semantic", "--database-url", dsn)
    assert f"({len(hits)} results, {len(hits)} weak: no word of the query in them)" in text.stdout
    assert text.stdout.count("weak: no keyword match") == len(hits)


async def test_scores_print_precisely_enough_to_tell_hybrid_hits_apart(pool: Pool, dsn: str, tmp_path: Path) -> None:
    await two_teams(pool, tmp_path)
    done = headrace("search", "zephyr", "--mode", "hybrid", "-o", "wide", "--database-url", dsn)
    assert done.returncode == 0, done.stderr
    printed = [line.split("score ")[1].split()[0] for line in done.stdout.splitlines() if "score " in line]
    assert len(printed) >= 2 and len(set(printed)) == len(printed), printed  # fused scores differ in the 4th digit
    assert "chunk " in done.stdout  # wide adds chunk ids


async def test_every_output_says_under_which_headings_a_hit_stands(pool: Pool, dsn: str, tmp_path: Path) -> None:
    files = {
        "guide.md": "# Guide\n\n## Installation\n\n### Proxies\n\nThe zephyr proxy forwards requests.\n",
        "plain.txt": "A zephyr with no heading above it.",
    }
    await ingest(pool, tmp_path, namespace="team-a", name="guide", files=files)
    path = " \u203a ".join(["Guide", "Installation", "Proxies"])
    for output in ("text", "wide"):
        done = headrace("search", "zephyr", "--mode", "keyword", "-o", output, "--database-url", dsn)
        assert done.returncode == 0, done.stderr
        lines = [line.strip() for line in done.stdout.splitlines()]
        assert lines[lines.index("Guide") + 1] == path  # under the document's title
        assert lines.count(path) == 1  # the plain-text hit has no path line
    json_hits = json.loads(headrace("search", "zephyr", "-o", "json", "--database-url", dsn).stdout)["hits"]
    yaml_hits = yaml.safe_load(headrace("search", "zephyr", "-o", "yaml", "--database-url", dsn).stdout)["hits"]
    for hits in (json_hits, yaml_hits):
        assert {hit["uri"]: hit["headingPath"] for hit in hits} == {"guide.md": path, "plain.txt": None}


async def test_a_job_embedded_by_an_endpoint_model_is_searched_by_keyword_only(
    pool: Pool, dsn: str, tmp_path: Path
) -> None:
    # `headrace search` embeds queries as the API does (headrace.embedding.query): with the built-in
    # model only, never by calling a tenant's endpoint.
    endpoint = {"provider": "endpoint", "endpoint": {"url": "http://127.0.0.1:9/v1", "model": "tiny", "dimensions": 3}}
    spec = IngestionJobSpec.model_validate({"source": {"volume": {"path": "."}}, "embedding": endpoint})
    await register_job(pool, uid=uuid.uuid4(), namespace="team-b", name="remote", generation=1, spec=spec)
    await vectors.ensure_space(pool, "tiny", 3)
    done = headrace("search", "car", "--mode", "semantic", "--database-url", dsn)
    assert done.returncode == 2 and done.stdout == ""
    assert "endpoint model tiny" in done.stderr and "built-in model only: use --mode keyword" in done.stderr
