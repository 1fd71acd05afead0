"""One function that takes secrets out of text before it leaves the process: `redact`.

Errors travel far: a worker's exception becomes a log line, `documents.error` (which the API serves),
a task's `last_error`, a run's error, a condition message in the IngestionJob's status and an Event.
Every one of those is readable by people who must not see the Secrets the job used, so every one is
built from `redact(text)`:

- every value this process read from a mounted Secret (`remember` is called by the worker's only
  reader of Secrets), and each long word of such a value (the token of `Bearer <token>`);
- the userinfo of URLs (`https://user:password@host/` → `https://[REDACTED]@host/`);
- credentials in query strings (`?access_token=...`, `X-Amz-Signature=...`);
- Authorization-like values (`Bearer ...`, `Basic ...`, `Authorization: ...`, `password=...`).
"""

import re
import threading
from collections.abc import Iterable

REDACTED = "[REDACTED]"

# Shorter values would redact ordinary words; a Secret that short protects nothing anyway.
_MIN_SECRET_CHARS = 4
_MIN_WORD_CHARS = 8

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@'\"]*@")
_QUERY_CREDENTIAL = re.compile(
    r"(?i)([?&;](?:access_token|id_token|refresh_token|token|api_?key|apikey|key|secret|password|passwd|pwd|sig|"
    r"signature|x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&#\s'\"]*"
)
# A credential after an auth scheme: with a digit or symbol, or long (so "the bearer token was" survives).
_SCHEME_CREDENTIAL = re.compile(
    r"(?i)\b(bearer|basic|digest|token|negotiate)(\s+)"
    r"(?:(?=[A-Za-z]*[0-9._~+/=:-])[A-Za-z0-9._~+/=:-]{4,}|[A-Za-z]{12,})"
)
_NAMED_CREDENTIAL = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api[-_]?key|x-auth-token|cookie|set-cookie|password|passwd|secret|"
    r"aws_secret_access_key|aws_session_token)(['\"]?\s*[:=]\s*['\"]?)(?!\[REDACTED\]|(?:bearer|basic|digest|token|negotiate)\s)[^\s'\",;&]+"
)

_lock = threading.Lock()
_known: set[str] = set()


def remember(values: Iterable[str]) -> None:
    """Redact these secret values (and their long words) from everything `redact` sees from now on."""
    fresh = set()
    for value in values:
        for candidate in (value, value.strip(), *value.split()):
            if len(candidate) >= (_MIN_SECRET_CHARS if candidate in (value, value.strip()) else _MIN_WORD_CHARS):
                fresh.add(candidate)
    with _lock:
        _known.update(fresh)


def forget_all() -> None:
    """Drop every remembered value (for tests)."""
    with _lock:
        _known.clear()


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without remembered secrets, `secrets`, URL userinfo, query credentials or Authorization-like values."""
    with _lock:
        known = set(_known)
    known.update(s for s in secrets if len(s) >= _MIN_SECRET_CHARS)
    # Longest first, so a value is not left half-replaced by one of its own words.
    for value in sorted(known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    text = _USERINFO.sub(rf"\1{REDACTED}@", text)
    text = _QUERY_CREDENTIAL.sub(rf"\1{REDACTED}", text)
    text = _SCHEME_CREDENTIAL.sub(rf"\1\2{REDACTED}", text)
    return _NAMED_CREDENTIAL.sub(rf"\1\2{REDACTED}", text)


def redact_optional(text: str | None) -> str | None:
    return None if text is None else redact(text)
