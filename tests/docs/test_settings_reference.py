"""docs/settings.md is what the settings classes generate, and it lists every setting every command reads."""

import subprocess
import sys
from pathlib import Path

from headrace.cli import Configured, main
from headrace.settings import CliSettings, variables
from headrace.settings_reference import reference_markdown

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "settings.md"


def test_committed_reference_is_current() -> None:
    assert REFERENCE.read_text() == reference_markdown(), "run: python scripts/gen-settings.py"


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    script = [sys.executable, str(ROOT / "scripts" / "gen-settings.py")]
    stale = tmp_path / "settings.md"
    stale.write_text(reference_markdown().replace("HEADRACE_LEASE_SECONDS", "HEADRACE_LEASE_SECS"))
    done = subprocess.run([*script, "--check", "--path", str(stale)], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "is stale" in done.stderr
    subprocess.run([*script, "--path", str(stale)], capture_output=True, check=True)
    done = subprocess.run([*script, "--check", "--path", str(stale)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


SHARED = ("Every command", "The database", "The listening address", "The Kubernetes API server")


def sections() -> dict[str, dict[str, list[str]]]:
    """Each section's documented variables, with their table row split into cells."""
    found: dict[str, dict[str, list[str]]] = {}
    title = ""
    for line in reference_markdown().splitlines():
        if line.startswith("## "):
            title = line.removeprefix("## ")
            found[title] = {}
        elif line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            for name in cells[0].split(" or "):
                assert name.strip("`") not in found[title], f"{name} is listed twice under {title}"
                found[title][name.strip("`")] = cells
    return found


def test_every_variable_any_command_reads_is_listed_with_a_meaning() -> None:
    documented = sections()
    classes = {CliSettings}
    for command in main.commands.values():
        if isinstance(command, Configured):
            classes |= set(command.settings_classes())
    assert len(classes) >= 7  # every role: api, ingest-api, operator and its election, worker, local, the CLI
    read = {name for settings in classes for field in settings.model_fields for name in variables(settings, field)}
    listed = {name for rows in documented.values() for name in rows}
    assert read - listed == set()
    assert [name for rows in documented.values() for name, cells in rows.items() if not cells[4]] == []


def test_a_shared_setting_is_listed_once() -> None:
    """A setting of a base class (logging, the database URL, ...) is not repeated under each role; a role's own
    setting of the same name as another role's (a pool size, a metrics port) has its own row and default."""
    documented = sections()
    shared = [name for title in SHARED for name in documented[title]]
    assert "HEADRACE_DATABASE_URL" in shared and "HEADRACE_LOG_LEVEL" in shared
    elsewhere = [(title, name) for title, rows in documented.items() if title not in SHARED for name in rows]
    assert [(title, name) for title, name in elsewhere if name in shared] == []
    assert len(shared) == len(set(shared))


def test_flags_are_listed_beside_the_variable_they_override() -> None:
    rows = {name: cells for section in sections().values() for name, cells in section.items()}
    assert rows["HEADRACE_DATABASE_URL"][1] == "`--database-url`"
    assert rows["HEADRACE_LISTEN_PORT"][1] == "`--port`"
    assert rows["HEADRACE_LEASE_SECONDS"][1] == "`--lease-seconds`"
    assert rows["HEADRACE_LOG_LEVEL"][1] == "`--log-level`"
