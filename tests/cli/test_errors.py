"""Bad input through the real `headrace` command: one line naming the problem and the fix, a non-zero exit,
and never a traceback (`--debug` shows it)."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from headrace.model import search_defaults
from headrace.store.db import Pool
from tests.conftest import with_database


def headrace(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("HEADRACE_DATABASE_URL", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "headrace", *args],
        env={**clean, "COLUMNS": "300", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error line, after asserting the exit and that nothing else (no traceback) was printed."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_unreachable_database_is_one_line_naming_it() -> None:
    line = one_line_error(headrace("search", "words", "--database-url", "postgresql://me@127.0.0.1:1/index"))
    assert "cannot reach the database at 127.0.0.1:1/index" in line
    assert "--database-url" in line


def test_an_unknown_database_host_is_one_line() -> None:
    line = one_line_error(headrace("search", "words", "--database-url", "postgresql://me@no-such-host.invalid/x"))
    assert "cannot reach the database at no-such-host.invalid/x" in line


def test_a_malformed_database_url_is_one_line_with_an_example() -> None:
    line = one_line_error(headrace("search", "words", "--database-url", "not-a-url"))
    assert "the database URL is not valid" in line
    assert "postgresql://user:password@host:5432/db" in line


def test_debug_shows_the_traceback() -> None:
    result = headrace("--debug", "search", "words", "--database-url", "postgresql://me@127.0.0.1:1/index")
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "ConnectionRefusedError" in result.stderr


def test_search_before_any_run_says_to_ingest_first(empty_dsn: str) -> None:
    line = one_line_error(headrace("search", "words", "--database-url", empty_dsn))
    assert "holds no Headrace index yet" in line
    assert "headrace run -f job.yaml" in line


def test_a_refused_credential_names_the_database(postgres_server: str) -> None:
    url = with_database(postgres_server, "postgres").replace("postgres:@", "nosuchuser:@", 1)
    line = one_line_error(headrace("search", "words", "--database-url", url))
    assert "refused the credentials" in line
    assert 'role "nosuchuser" does not exist' in line


def test_an_unknown_database_name_is_one_line(postgres_server: str) -> None:
    line = one_line_error(headrace("search", "words", "--database-url", with_database(postgres_server, "nodb")))
    assert "/nodb does not exist" in line


def test_an_empty_query_is_a_usage_error_before_any_work(dsn: str) -> None:
    result = headrace("search", "", "--database-url", dsn)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "NaN" not in result.stderr
    assert "the query is empty" in result.stderr


def test_api_outside_a_cluster_says_which_auth_to_choose(dsn: str) -> None:
    line = one_line_error(headrace("api", "--port", "1", HEADRACE_DATABASE_URL=dsn))
    assert "auth mode 'kubernetes' outside a cluster needs HEADRACE_KUBE_API_URL" in line
    assert "HEADRACE_AUTH_MODE=token" in line


def test_api_with_an_unreachable_database_fails_before_serving() -> None:
    result = headrace(
        "api",
        "--port",
        "1",
        HEADRACE_DATABASE_URL="postgresql://me@127.0.0.1:1/index",
        HEADRACE_AUTH_MODE="token",
        HEADRACE_AUTH_TOKEN="t",
    )
    assert "cannot reach the database at 127.0.0.1:1/index" in one_line_error(result)


@pytest.mark.parametrize(("make", "what"), [(lambda p: None, "does not exist"), (Path.touch, "is not a folder")])
def test_a_missing_source_folder_fails_at_once_naming_its_absolute_path(
    tmp_path: Path, dsn: str, make: object, what: str
) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        "apiVersion: headrace.io/v1alpha1\nkind: IngestionJob\nmetadata:\n  name: nf\n"
        "spec:\n  source:\n    volume:\n      path: nosuchdir\n"
    )
    make(tmp_path / "nosuchdir")  # type: ignore[operator]
    # Run from elsewhere: the path is taken from the manifest's folder, and the message says which.
    line = one_line_error(headrace("run", "-f", str(manifest), "--database-url", dsn, cwd=Path("/")))
    assert f"spec.source.volume.path: {tmp_path / 'nosuchdir'} {what}" in line
    assert "Discovering" not in line


def test_api_on_an_unmigrated_database_says_to_migrate(empty_dsn: str) -> None:
    line = one_line_error(
        headrace(
            "api", "--port", "1", HEADRACE_DATABASE_URL=empty_dsn, HEADRACE_AUTH_MODE="token", HEADRACE_AUTH_TOKEN="t"
        )
    )
    assert "run `headrace migrate`" in line


async def test_run_prints_no_log_lines_and_retry_failed_with_nothing_failed_starts_no_run(
    dsn: str, tmp_path: Path
) -> None:
    import asyncpg

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("The keeper trimmed the lamp.")
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        "apiVersion: headrace.io/v1alpha1\nkind: IngestionJob\nmetadata:\n  name: calm\n"
        "spec:\n  source:\n    volume:\n      path: corpus\n"
    )
    first = headrace("run", "-f", str(manifest), "--workers", "1", "--database-url", dsn)
    assert first.returncode == 0, first.stderr
    # Only the bar and the table: no log line cuts in between them.
    assert '"level"' not in first.stderr and "Built search statistics" not in first.stderr
    told = headrace("--log-level", "INFO", "run", "-f", str(manifest), "--workers", "1", "--database-url", dsn)
    assert '"level": "info"' in told.stderr
    again = headrace("run", "-f", str(manifest), "--retry-failed", "--database-url", dsn)
    assert again.returncode == 0, again.stderr
    assert "Nothing to retry: default/calm has no failed documents (run 2)." in again.stderr
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM headrace.runs") == 2
    finally:
        await conn.close()


async def test_two_manifest_files_naming_the_same_job_are_refused_naming_both(dsn: str, tmp_path: Path) -> None:
    """The same relative path in two folders: without the check, b's documents would join a's index."""
    import asyncpg

    for folder in ("a", "b"):
        (tmp_path / folder / "docs").mkdir(parents=True)
        (tmp_path / folder / "docs" / "doc.txt").write_text(f"Folder {folder} notes.")
        (tmp_path / folder / "job.yaml").write_text(
            "apiVersion: headrace.io/v1alpha1\nkind: IngestionJob\nmetadata:\n  name: same\n"
            "spec:\n  source:\n    volume:\n      path: docs\n"
        )
    a, b = tmp_path / "a" / "job.yaml", tmp_path / "b" / "job.yaml"
    first = headrace("run", "-f", str(a), "--workers", "1", "--database-url", dsn)
    assert first.returncode == 0 and "Warning" not in first.stderr, first.stderr
    again = headrace("run", "-f", str(a), "--workers", "1", "--database-url", dsn, cwd=tmp_path / "a")
    assert again.returncode == 0 and "Warning" not in again.stderr, again.stderr

    line = one_line_error(headrace("run", "-f", "b/job.yaml", "--workers", "1", "--database-url", dsn, cwd=tmp_path))
    assert line == (
        f"Error: {b} and {a} both define the local job default/same (one index per namespace and name): "
        "give one of them its own metadata.name"
    )
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM headrace.runs") == 2  # b started no run
        assert await conn.fetchval("SELECT count(*) FROM headrace.documents WHERE uri LIKE '%doc.txt'") == 1
    finally:
        await conn.close()

    # Once a's file names another job, b may take the name over, and is told what the index still holds.
    a.write_text(a.read_text().replace("name: same", "name: other"))
    taken = headrace("run", "-f", str(b), "--workers", "1", "--database-url", dsn)
    assert taken.returncode == 0, taken.stderr
    assert f"Warning: default/same was last run from {a}; what it ingested" in " ".join(taken.stderr.split())


def test_a_manifest_whose_source_changed_is_warned_about(dsn: str, tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "doc.txt").write_text(f"Folder {folder} notes.")
    for folder in ("a", "b"):
        manifest.write_text(
            "apiVersion: headrace.io/v1alpha1\nkind: IngestionJob\nmetadata:\n  name: same\n"
            f"spec:\n  source:\n    volume:\n      path: {folder}\n"
        )
        done = headrace("run", "-f", str(manifest), "--workers", "1", "--database-url", dsn)
        assert done.returncode == 0, done.stderr
    assert "Warning: default/same was last run with another source" in " ".join(done.stderr.split())


async def test_a_search_over_its_timeout_is_one_line_saying_how_to_narrow_it(dsn: str, pool: Pool) -> None:
    # Another transaction holds the chunks table: the search waits, and its statement timeout ends it.
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("LOCK TABLE headrace.chunks IN ACCESS EXCLUSIVE MODE")
        result = await asyncio.to_thread(headrace, "search", "words", "--mode", "keyword", "--database-url", dsn)
    line = one_line_error(result)
    assert result.returncode == 1
    assert f"the search took longer than its timeout of {search_defaults.TIMEOUT_MS} ms" in line
    assert "--namespace, --job or --prefix" in line
    assert "unexpected error" not in line
