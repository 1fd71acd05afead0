#!/usr/bin/env python3
"""Write docs/settings.md from the settings classes (see headrace/settings_reference.py)."""

import argparse
import sys
from pathlib import Path

from headrace.settings_reference import reference_markdown

TARGET = Path(__file__).resolve().parent.parent / "docs" / "settings.md"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", type=Path, default=TARGET, help="File to write or check.")
    parser.add_argument("--check", action="store_true", help="Exit 1 when the file differs; write nothing.")
    args = parser.parse_args()
    text = reference_markdown()
    if args.check:
        if not args.path.exists() or args.path.read_text() != text:
            sys.exit(f"{args.path} is stale: run python scripts/gen-settings.py")
    else:
        args.path.write_text(text)
        print(f"Wrote {args.path}")
