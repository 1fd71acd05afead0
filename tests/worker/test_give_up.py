"""A worker whose store stays unreachable past the outage budget exits 1 with one line saying where it
tried, whether that store is the ingest service or Postgres itself."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from headrace.cli import main
from headrace.model.contract import DATABASE_URL_ENV
from headrace.store import outage
from tests.sockets import free_port

JOB = "0b6f0c1e-1111-4c1e-8a52-5d0c9d4e0f5b"


@pytest.fixture(autouse=True)
def short_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outage, "OUTAGE_SECONDS", 1.0)
    for name in ("HEADRACE_DATABASE_URL", DATABASE_URL_ENV, "HEADRACE_INGEST_URL"):
        monkeypatch.delenv(name, raising=False)


def test_a_remote_worker_gives_up_on_an_unreachable_service_in_one_line(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("a.worker.token")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {"HEADRACE_INGEST_URL": url, "HEADRACE_INGEST_TOKEN_FILE": str(token)}
    result = CliRunner().invoke(main, ["worker", "--job", JOB], env=env)
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert line.startswith(f"Error: cannot reach the ingest service at {url} for 1 s: ConnectError")
    assert "HEADRACE_INGEST_URL" in line and "bug" not in result.output


def test_a_direct_worker_gives_up_on_an_unreachable_database_in_one_line() -> None:
    port = free_port()
    result = CliRunner().invoke(main, ["worker", "--job", JOB, "--database-url", f"postgresql://u@127.0.0.1:{port}/db"])
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert line.startswith(f"Error: cannot reach the database at 127.0.0.1:{port}/db: ")
    assert "bug" not in result.output
