"""The worker's settings come from the same variables the operator's pod template and local mode set."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from headrace.cli import main
from headrace.model.contract import DATABASE_URL_ENV, SECRETS_DIR_ENV, VOLUME_ROOT_ENV
from headrace.worker.settings import WorkerSettings


def test_worker_reads_the_pod_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEADRACE_DATABASE_URL", raising=False)
    monkeypatch.setenv(DATABASE_URL_ENV, "postgresql://pod/db")
    monkeypatch.setenv(VOLUME_ROOT_ENV, "/var/run/headrace/source")
    monkeypatch.setenv(SECRETS_DIR_ENV, "/elsewhere")
    monkeypatch.setenv("HEADRACE_EXTRACT_MEMORY_MIB", "2048")
    settings = WorkerSettings()
    assert settings.database_url.get_secret_value() == "postgresql://pod/db"
    assert (settings.volume_root, settings.secrets_dir) == (Path("/var/run/headrace/source"), Path("/elsewhere"))
    assert settings.extract_memory_mib == 2048
    assert WorkerSettings(lease_seconds=5).lease_seconds == 5  # a flag wins over the environment


def test_worker_refuses_bad_settings_naming_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HEADRACE_DATABASE_URL", DATABASE_URL_ENV):
        monkeypatch.delenv(name, raising=False)
    job = "0b6f0c1e-1111-4c1e-8a52-5d0c9d4e0f5b"
    result = CliRunner().invoke(main, ["worker", "--job", job])
    assert result.exit_code == 2 and "database URL" in result.output
    monkeypatch.setenv("HEADRACE_LEASE_SECONDS", "0")
    result = CliRunner().invoke(main, ["worker", "--job", job, "--database-url", "postgresql://x/y"])
    assert result.exit_code == 2 and "lease_seconds" in result.output
