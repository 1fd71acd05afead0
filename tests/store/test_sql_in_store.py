"""SQL lives in headrace/store/: no other module holds a statement, and import-linter keeps the driver there."""

import ast
import re
import tomllib
from pathlib import Path

import headrace

PACKAGE = Path(headrace.__file__).parent
ROOT = PACKAGE.parent
_STATEMENT = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+(\.\w+)?\s+(\w+\s+)?SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX))\b",
    re.DOTALL,
)


def _strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_no_sql_outside_the_store() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text.strip()[:80]}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "store" not in path.relative_to(PACKAGE).parts[:1]
        for line, text in _strings(path)
        if _STATEMENT.search(text)
    ]
    assert found == []


def test_the_driver_contract_names_every_module_but_the_store() -> None:
    """A new top-level module is covered by the contract only once it is listed there."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = (c for c in config["tool"]["importlinter"]["contracts"] if c.get("forbidden_modules") == ["asyncpg"])
    modules = {
        f"headrace.{path.stem if path.is_file() else path.name}"
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    assert set(contract["source_modules"]) == modules - {"headrace.store"}
