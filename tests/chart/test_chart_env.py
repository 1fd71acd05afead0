"""Every environment variable the chart sets is one the process it starts actually reads."""

from typing import Any

import pytest
from pydantic_settings import BaseSettings

from headrace.cli import Configured, main
from headrace.model.contract import DATABASE_URL_ENV
from headrace.settings import CliSettings, variables
from tests.chart.conftest import EVERYTHING, Render, by_kind


def settings_envvars(settings: type[BaseSettings]) -> set[str]:
    return {name for field in settings.model_fields for name in variables(settings, field)}


def read_by(role: str) -> set[str]:
    """What `headrace <role>` reads: the `headrace` command's own settings and those of the subcommand."""
    command = main.commands[role]
    classes = [CliSettings, *(command.settings_classes() if isinstance(command, Configured) else [])]
    return {name for settings in classes for name in settings_envvars(settings)}


def containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for obj in by_kind(objects, "Deployment") + by_kind(objects, "Job"):
        for container in obj["spec"]["template"]["spec"]["containers"]:
            found.append((container["args"][0], container))
    return found


@pytest.mark.parametrize("values", [(), (EVERYTHING,)], ids=["default", "everything"])
def test_chart_env_is_read_by_the_code(render: Render, values: tuple[Any, ...]) -> None:
    objects = render(*values)
    roles = containers(objects)
    assert {role for role, _ in roles} == {"operator", "api", "ingest-api", "migrate"}
    assert all(DATABASE_URL_ENV in read_by(role) for role, _ in roles)
    for role, container in roles:
        set_by_chart = {e["name"] for e in container["env"]} - {"HEADRACE_EXTRA"}  # the test's own extraEnv
        unread = set_by_chart - read_by(role)
        assert unread == set(), f"{role} is given {sorted(unread)}, which it never reads"


def test_operator_flags_exist(render: Render) -> None:
    (operator,) = [c for role, c in containers(render()) if role == "operator"]
    options = {opt for param in main.commands["operator"].params for opt in getattr(param, "opts", [])}
    options |= {opt for param in main.commands["operator"].params for opt in getattr(param, "secondary_opts", [])}
    for arg in operator["args"][1:]:
        assert arg.split("=", 1)[0] in options, arg


@pytest.mark.parametrize(("values", "expected"), [((), "false"), ((EVERYTHING,), "true")], ids=["default", "on"])
def test_private_networks_are_off_unless_the_installation_says_so(
    render: Render, values: tuple[Any, ...], expected: str
) -> None:
    (operator,) = [c for role, c in containers(render(*values)) if role == "operator"]
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["HEADRACE_ALLOW_PRIVATE_NETWORKS"] == expected
