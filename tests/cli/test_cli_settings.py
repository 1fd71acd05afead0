"""Every command reads its settings one way: `HEADRACE_*` variables through its settings classes, its flags
winning over them, a bad value refused at start in one line naming it, and `--help` naming the variables."""

from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from headrace.cli import Configured, main

UNREACHABLE_ENV = "postgresql://me@127.0.0.1:1/from_env"
UNREACHABLE_FLAG = "postgresql://me@127.0.0.1:2/from_flag"


def headrace(*args: str, **env: str | None) -> Result:
    clean: dict[str, str | None] = {"HEADRACE_DATABASE_URL": None, "DATABASE_URL": None}
    return CliRunner().invoke(main, list(args), env={**clean, **env}, terminal_width=400)


def commands(group: click.Group = main) -> list[click.Command]:
    found: list[click.Command] = []
    for command in group.commands.values():
        found += commands(command) if isinstance(command, click.Group) else [command]
    return found


def test_click_reads_no_variable_itself() -> None:
    """The settings classes are the one reader of the environment: no option has an envvar of its own."""
    params = [param for command in [main, *commands()] for param in command.params]
    assert len(params) > 40
    assert [param.name for param in params if param.envvar] == []


@pytest.mark.parametrize("variable", ["HEADRACE_DATABASE_URL", "DATABASE_URL"])
def test_the_database_url_comes_from_either_variable_and_says_so(variable: str) -> None:
    result = headrace("migrate", **{variable: UNREACHABLE_ENV})
    assert result.exit_code == 1, result.output
    assert f"Using the database at 127.0.0.1:1/from_env from ${variable}, not the embedded one" in result.output
    assert "cannot reach the database at 127.0.0.1:1/from_env" in result.output


def test_a_flag_wins_over_the_environment() -> None:
    result = headrace("migrate", "--database-url", UNREACHABLE_FLAG, HEADRACE_DATABASE_URL=UNREACHABLE_ENV)
    assert result.exit_code == 1, result.output
    assert "cannot reach the database at 127.0.0.1:2/from_flag" in result.output
    assert "from_env" not in result.output and "Using the database" not in result.output


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["crd", "--stdout"], {"HEADRACE_LOG_FORMAT": "xml"}, "log_format: Input should be 'json' or 'text'"),
        (["crd", "--stdout"], {"HEADRACE_LOG_LEVEL": "loud"}, "log_level: Input should be 'DEBUG'"),
        (["--log-level", "loud", "crd", "--stdout"], {}, "log_level: Input should be 'DEBUG'"),
        (["crd", "--stdout"], {"HEADRACE_DEBUG": "maybe"}, "debug: Input should be a valid boolean"),
        (["demo", "--no-serve"], {"HEADRACE_LISTEN_PORT": "eighty"}, "listen_port: Input should be a valid integer"),
        (["api", "--local"], {"HEADRACE_LISTEN_PORT": "70000"}, "listen_port: Input should be less than or equal"),
    ],
)
def test_a_bad_value_is_refused_at_start_naming_it(args: list[str], env: dict[str, str], named: str) -> None:
    result = headrace(*args, **env)
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output


def test_a_level_is_read_whatever_its_case() -> None:
    assert headrace("crd", "--stdout", HEADRACE_LOG_LEVEL="debug").exit_code == 0


def test_debug_from_the_environment_shows_the_traceback() -> None:
    result = headrace("search", "words", "--database-url", UNREACHABLE_FLAG, HEADRACE_DEBUG="1")
    assert isinstance(result.exception, OSError)  # raised, not turned into one line


def test_api_without_a_database_says_where_one_comes_from() -> None:
    result = headrace("api")
    assert result.exit_code == 2
    assert "a database URL is needed: --database-url, HEADRACE_DATABASE_URL or DATABASE_URL" in result.output


def test_local_api_takes_the_address_from_the_environment(data_dir: Path) -> None:
    """`api --local` serves on loopback unless told otherwise, and HEADRACE_LISTEN_HOST tells it."""
    result = headrace("api", "--local", "--data-dir", str(data_dir), HEADRACE_LISTEN_HOST="0.0.0.0")
    assert result.exit_code == 1
    assert "only allowed on a loopback address, not '0.0.0.0'" in result.output


@pytest.mark.parametrize(
    ("command", "variables"),
    [
        ("api", ["HEADRACE_LISTEN_PORT", "HEADRACE_DATABASE_URL", "DATABASE_URL", "HEADRACE_SEARCH_TIMEOUT_MS"]),
        ("worker", ["HEADRACE_LEASE_SECONDS", "HEADRACE_INGEST_URL", "HEADRACE_LOG_LEVEL"]),
        ("ingest-api", ["HEADRACE_INGEST_PORT", "HEADRACE_KUBE_API_URL"]),
        ("run", ["HEADRACE_DATABASE_URL"]),
    ],
)
def test_help_names_the_variables_a_command_reads(command: str, variables: list[str]) -> None:
    result = headrace(command, "--help")
    assert result.exit_code == 0
    environment = result.output.split("Environment", 1)[1]
    for variable in variables:
        assert variable in environment


def test_every_command_that_takes_a_database_url_declares_the_settings_it_reads() -> None:
    """A command with `--database-url` reads it through a settings class, so docs/settings.md lists it."""
    undeclared = [
        command.name
        for command in commands()
        if any(param.name == "database_url" for param in command.params)
        and not (isinstance(command, Configured) and command.settings)
    ]
    assert undeclared == []
