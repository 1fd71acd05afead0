"""No doc, example or chart note puts a database URL into a namespace other than the release's.

The owner's URL opens every namespace's data; a tenant namespace that holds it (a Secret, a pod's
env) is no boundary (docs/security.md, "Database isolation between namespaces"). README.md used to
tell users to copy it into every namespace that runs IngestionJobs.
"""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RELEASE_NAMESPACES = {"headrace", "{{ .Release.Namespace }}"}
"""The release namespace as the docs write it (and as NOTES.txt renders it)."""

PAGES = sorted(
    {
        ROOT / "README.md",
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / "examples").rglob("*.yaml"),
        ROOT / "charts" / "headrace" / "README.md",
        ROOT / "charts" / "headrace" / "templates" / "NOTES.txt",
    }
)
DATABASE_URL = re.compile(r"DATABASE_URL|postgres(ql)?://")
NAMESPACE = re.compile(r"(?:\s-n\s*|--namespace[=\s]\s*)(\{\{[^}]*\}\}|\S+)")
WRITES_SECRET = re.compile(r"kubectl\b.*\b(create secret|apply|patch secret|edit secret|replace)\b")


def commands(text: str) -> list[str]:
    """Shell lines with their backslash continuations joined, and `#` comment markers dropped."""
    joined = re.sub(r"\\\n\s*(#\s*)?", " ", text)
    return [re.sub(r"^\s*#\s*", "", line) for line in joined.splitlines()]


def misplaced_commands(text: str) -> list[str]:
    """Commands that write a database URL into a Secret outside the release namespace, or into no named one."""
    found = []
    for line in commands(text):
        if not (DATABASE_URL.search(line) and WRITES_SECRET.search(line)):
            continue
        namespaces = {ns.strip("'\"") for ns in NAMESPACE.findall(f" {line}")}
        if not namespaces or not namespaces <= RELEASE_NAMESPACES:
            found.append(line.strip())
    return found


def misplaced_manifests(text: str) -> list[str]:
    """Secret manifests (fenced YAML in a page, or a YAML file) holding a database URL outside the release namespace."""
    blocks = re.findall(r"```ya?ml\n(.*?)```", text, flags=re.DOTALL) or [text]
    found = []
    for block in blocks:
        try:
            documents = [d for d in yaml.safe_load_all(block) if isinstance(d, dict)]
        except yaml.YAMLError:
            continue  # templated or partial YAML: not a manifest anyone applies as is
        for doc in documents:
            values = {**(doc.get("data") or {}), **(doc.get("stringData") or {})}
            if doc.get("kind") != "Secret" or not any(DATABASE_URL.search(f"{k} {v}") for k, v in values.items()):
                continue
            namespace = (doc.get("metadata") or {}).get("namespace")
            if namespace not in RELEASE_NAMESPACES:
                found.append(f"Secret {doc.get('metadata', {}).get('name')} in namespace {namespace}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_database_urls_stay_in_the_release_namespace(page: Path) -> None:
    text = page.read_text()
    assert misplaced_commands(text) == []
    assert misplaced_manifests(text) == []


def test_the_check_finds_what_readme_used_to_say() -> None:
    old = (
        "kubectl -n docs-team create secret generic headrace-database "
        "--from-literal=DATABASE_URL='postgresql://USER:PASSWORD@HOST:5432/DB'"
    )
    assert misplaced_commands(f"```sh\n{old}\n```") == [old]
    continued = "kubectl create secret generic headrace-database \\\n  --namespace=team-a --from-literal=DATABASE_URL=x"
    assert len(misplaced_commands(continued)) == 1
    unnamed = "kubectl create secret generic db --from-literal=DATABASE_URL=postgresql://u:p@h/d"
    assert misplaced_commands(unnamed) == [unnamed]
    home = "kubectl -n headrace create secret generic headrace-database --from-literal=DATABASE_URL=x"
    assert misplaced_commands(home) == []
    manifest = (
        "```yaml\napiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: team-a\n"
        "stringData:\n  DATABASE_URL: postgresql://u:p@h/d\n```\n"
    )
    assert misplaced_manifests(manifest) == ["Secret db in namespace team-a"]
    assert misplaced_manifests(manifest.replace("team-a", "headrace")) == []
