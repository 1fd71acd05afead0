"""`headrace ingest-api` is told what it needs by HEADRACE_* variables, and says which one is wrong."""

import pytest
from click.testing import CliRunner

from headrace.cli import main
from headrace.ingest.settings import IngestSettings


def test_a_missing_database_url_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HEADRACE_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["ingest-api"])
    assert result.exit_code == 1
    assert "invalid ingest service settings" in result.output and "HEADRACE_DATABASE_URL" in result.output


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://owner@db/headrace")
    monkeypatch.setenv("HEADRACE_INGEST_AUDIENCE", "ingest-of-release-b")
    monkeypatch.setenv("HEADRACE_INGEST_RATE_LIMIT_PER_SECOND", "50")
    settings = IngestSettings()
    assert settings.database_url.get_secret_value() == "postgresql://owner@db/headrace"
    assert (settings.ingest_audience, settings.ingest_rate_limit_per_second) == ("ingest-of-release-b", 50)
    assert (settings.ingest_host, settings.ingest_port) == ("0.0.0.0", 8081)


def test_a_kubernetes_service_link_is_not_read_as_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Service named headrace-ingest in the namespace gives its pods HEADRACE_INGEST_PORT=tcp://<ip>:8081."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://owner@db/headrace")
    monkeypatch.setenv("HEADRACE_INGEST_PORT", "tcp://10.96.0.12:8081")
    assert IngestSettings().ingest_port == 8081
    monkeypatch.setenv("HEADRACE_INGEST_PORT", "9000")
    assert IngestSettings().ingest_port == 9000
