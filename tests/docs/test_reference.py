"""docs/ingestionjob.md is what the models generate, and it documents every field."""

import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from headrace.model import IngestionJobSpec, IngestionJobStatus, KubeModel
from headrace.model.reference import field_rows, reference_markdown

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "ingestionjob.md"


def test_committed_reference_is_current() -> None:
    assert REFERENCE.read_text() == reference_markdown(), "run: python scripts/gen-reference.py"


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    script = [sys.executable, str(ROOT / "scripts" / "gen-reference.py")]
    stale = tmp_path / "ingestionjob.md"
    stale.write_text(reference_markdown().replace("Fewest workers", "Least workers"))
    done = subprocess.run([*script, "--check", "--path", str(stale)], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "is stale" in done.stderr
    subprocess.run([*script, "--path", str(stale)], capture_output=True, check=True)
    done = subprocess.run([*script, "--check", "--path", str(stale)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _wire_paths(model: type[BaseModel], prefix: str) -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}.{field.alias or name}"
        paths.append(path)
        annotation = field.annotation
        suffix = "[]" if getattr(annotation, "__origin__", None) is list else ""
        for kind in getattr(annotation, "__args__", (annotation,)):  # X | None, list[X], or X
            if isinstance(kind, type) and issubclass(kind, KubeModel):
                paths += _wire_paths(kind, path + suffix)
    return paths


def test_every_model_field_has_a_documented_row() -> None:
    text = reference_markdown()
    for path in _wire_paths(IngestionJobSpec, "spec") + _wire_paths(IngestionJobStatus, "status"):
        assert f"| `{path}` |" in text, path


def test_every_row_has_a_description() -> None:
    from headrace.model import IngestionJob

    schema = IngestionJob.model_json_schema(by_alias=True)
    defs: dict[str, Any] = schema["$defs"]
    rows = field_rows(defs["IngestionJobSpec"], defs, "spec")
    assert rows
    assert [row.path for row in rows if not row.description] == []


def test_bounds_and_requirements_come_from_the_schema() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["size"],
        "properties": {
            "size": {"type": "integer", "minimum": 1, "maximum": 9, "description": "How big."},
            "mode": {"enum": ["a", "b"], "default": "a", "description": "Which | way."},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "default": []},
        },
    }
    rows = {row.path: row for row in field_rows(schema, {}, "x")}
    assert rows["x.size"].default == "required"
    assert rows["x.size"].bounds == "≥ 1; ≤ 9"
    assert rows["x.mode"].bounds == "one of `a`, `b`"
    assert rows["x.mode"].description == "Which \\| way."
    assert rows["x.tags"].type == "[]string"
    assert rows["x.tags"].bounds == "each: length ≤ 5"
