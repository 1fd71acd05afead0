"""Chart fixtures: the real helm binary (installed into .tools/ by `make tools`) and rendered manifests."""

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "headrace"
TOOLS = ROOT / ".tools" / "bin"
EVERYTHING = Path(__file__).parent / "values-everything.yaml"
RELEASE = "hr"
NAMESPACE = "headrace"

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]


def tool(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make tools` (scripts/install-tools.py)")
    return path


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm; never raises, so tests can assert on failures too."""
    return subprocess.run([str(tool("helm")), *args], capture_output=True, text=True, check=False)


def render_text(*values_files: Path, sets: tuple[str, ...] = ()) -> str:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for values in values_files:
        args += ["--values", str(values)]
    for item in sets:
        args += ["--set", item]
    done = helm(*args)
    if done.returncode != 0:
        raise AssertionError(f"helm template failed:\n{done.stderr}")
    return done.stdout


def parse(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="session")
def render() -> Render:
    """Render the chart with values files and --set items, returning its objects."""

    def go(*values_files: Path, sets: tuple[str, ...] = ()) -> list[Manifest]:
        return parse(render_text(*values_files, sets=sets))

    return go


@pytest.fixture(scope="session")
def default_text() -> str:
    return render_text()


@pytest.fixture(scope="session")
def everything_text() -> str:
    return render_text(EVERYTHING)


@pytest.fixture(scope="session", params=["default", "everything"])
def rendered(request: pytest.FixtureRequest, default_text: str, everything_text: str) -> Iterator[list[Manifest]]:
    """The chart's objects with default values, then with every optional part on."""
    yield parse(default_text if request.param == "default" else everything_text)


def pod_specs(objects: list[Manifest]) -> list[tuple[str, Manifest]]:
    """(kind/name, pod spec) of every workload object."""
    found = []
    for obj in objects:
        spec = obj.get("spec", {})
        template = spec.get("jobTemplate", {}).get("spec", spec).get("template")
        if obj["kind"] == "Pod":
            found.append((f"Pod/{obj['metadata']['name']}", spec))
        elif template is not None:
            found.append((f"{obj['kind']}/{obj['metadata']['name']}", template["spec"]))
    return found


def by_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]
