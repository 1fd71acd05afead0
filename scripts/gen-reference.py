#!/usr/bin/env python3
"""Write docs/ingestionjob.md from the IngestionJob models (see headrace/model/reference.py)."""

import sys
from pathlib import Path

from headrace.model.reference import reference_markdown

TARGET = Path(__file__).resolve().parent.parent / "docs" / "ingestionjob.md"

if __name__ == "__main__":
    check = "--check" in sys.argv[1:]
    text = reference_markdown()
    if check:
        if not TARGET.exists() or TARGET.read_text() != text:
            sys.exit(f"{TARGET} is stale: run python scripts/gen-reference.py")
    else:
        TARGET.write_text(text)
        print(f"Wrote {TARGET}")
