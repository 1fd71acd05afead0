"""One module writes each table (docs/architecture.md, "Tables"): a statement that inserts, updates or
deletes rows of a table is found in that table's module and nowhere else in the package."""

import re
from pathlib import Path

import headrace

OWNERS = {
    "tasks": "store/queue.py",
    "documents": "store/documents.py",
    "chunks": "store/documents.py",
    "embeddings": "store/vectors.py",
    "embedding_spaces": "store/vectors.py",
}

WRITE = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+headrace\.(\w+)\b", re.IGNORECASE)


def test_each_table_is_written_by_its_own_module_only() -> None:
    package = Path(headrace.__file__).parent
    writers: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        for table in WRITE.findall(path.read_text(encoding="utf-8")):
            writers.setdefault(table, set()).add(path.relative_to(package).as_posix())
    assert {table: writers.get(table, set()) for table in OWNERS} == {t: {m} for t, m in OWNERS.items()}
