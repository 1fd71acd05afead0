"""Run by tests (service.py): the ingest service's own `run`, with `Identities` for authentication.

Usage: python -m tests.ingest.serve DSN PORT IDENTITIES_FILE"""

import asyncio
import sys
from pathlib import Path

from headrace import logs
from headrace.ingest.server import run
from tests.ingest.service import Identities, settings


def main() -> None:
    dsn, port, identities = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    logs.configure("text", "INFO")
    ok = asyncio.run(run(settings(dsn, ingest_host="127.0.0.1", ingest_port=port), Identities(identities)))
    sys.exit(0 if ok else 3)


if __name__ == "__main__":
    main()
