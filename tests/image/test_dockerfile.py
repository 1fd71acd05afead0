"""The Dockerfile, checked without a container engine: hadolint, the build context, and the final stage."""

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in logical]


def stages(text: str) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions(text):
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_hadolint_finds_nothing() -> None:
    done = hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\nCMD python\n")
    done = hadolint(careless)
    assert done.returncode != 0
    for rule in ["DL3007", "DL3008", "DL3015"]:
        assert rule in done.stdout


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern decides; `!` re-includes; a folder's match covers its files."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        body = body.removeprefix("**/")
        candidates = prefixes + [p for n in range(len(parts)) for p in ["/".join(parts[n:])]]
        if any(fnmatch.fnmatchcase(candidate, body) for candidate in candidates):
            ignored = not negate
    return ignored


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    patterns = ignore_patterns()
    copied = []
    for name, args in instructions(DOCKERFILE.read_text()):
        if name not in ("COPY", "ADD"):
            continue
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        if "--from=" in args:
            continue
        for source in words[:-1]:
            copied.append(source)
            assert (ROOT / source).exists(), f"COPY {source}: no such path"
            assert not dockerignored(source.rstrip("/"), patterns), f"COPY {source}: excluded by .dockerignore"
    assert copied, "the Dockerfile copies nothing from the build context"


def test_the_package_build_needs_nothing_outside_the_context() -> None:
    """pyproject.toml names README.md as the readme and packages headrace/: both are copied."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    copied = " ".join(args for name, args in instructions(DOCKERFILE.read_text()) if name == "COPY")
    assert project["readme"] in copied
    assert "headrace" in copied


@pytest.mark.parametrize(
    ("path", "ignored"),
    [("pyproject.toml", False), ("headrace/cli.py", False), ("tests/conftest.py", True), (".venv/bin/python", True)],
)
def test_dockerignore_keeps_the_context_small(path: str, ignored: bool) -> None:
    assert dockerignored(path, ignore_patterns()) is ignored


def test_final_stage_is_slim_non_root_and_runs_headrace() -> None:
    all_stages = stages(DOCKERFILE.read_text())
    assert len(all_stages) >= 2, "multi-stage: build in one stage, run in another"
    final = all_stages[-1]
    text = " ".join(args for _, args in final)
    assert not re.search(r"\b(apt-get install|apk add|gcc|build-essential|pip install)\b", text)
    (user,) = [args for name, args in final if name == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or gid.isdigit()), user
    (entrypoint,) = [args for name, args in final if name == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["headrace"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "headrace" in scripts


def test_chart_runs_the_image_as_the_dockerfile_user() -> None:
    import yaml

    values = yaml.safe_load((ROOT / "charts" / "headrace" / "values.yaml").read_text())
    (user,) = [args for name, args in stages(DOCKERFILE.read_text())[-1] if name == "USER"]
    assert f"{values['podSecurityContext']['runAsUser']}:{values['podSecurityContext']['runAsGroup']}" == user
