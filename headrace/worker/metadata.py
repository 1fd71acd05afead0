"""Searchable document metadata: what the source and the format know, plus the detected language.

Keys are camelCase like the API: `title`, `contentType`, `language`, `size`, `modified`, and where a
format or source has them `author`, `description`, `keywords`, `subject`, `created`, `tags`,
`objectMetadata`. Search filters match them with jsonb containment (`{"language": "en"}`).
Values are short strings (or a string map); dates are ISO 8601 in UTC.
"""

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any

Metadata = dict[str, Any]

_VALUE_LIMIT = 500
_LANGUAGE_SAMPLE_CHARS = 4000
_MIN_LANGUAGE_CHARS = 40
# What `format` means as a media type, for documents whose source announced none.
CONTENT_TYPES = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "html": "text/html",
    "markdown": "text/markdown",
    "json": "application/json",
    "csv": "text/csv",
    "text": "text/plain",
}


def clean(values: dict[str, Any]) -> Metadata:
    """Drop empty values; trim strings; keep maps of strings (tags, object metadata) as maps."""
    kept: Metadata = {}
    for key, value in values.items():
        if isinstance(value, dict):
            inner = {str(k)[:128]: str(v).strip()[:_VALUE_LIMIT] for k, v in value.items() if str(v).strip()}
            if inner:
                kept[key] = inner
        elif isinstance(value, datetime):
            kept[key] = iso(value)
        elif isinstance(value, bool | int | float):
            kept[key] = value
        elif value is not None and str(value).strip():
            kept[key] = " ".join(str(value).split())[:_VALUE_LIMIT]
    return kept


def iso(value: datetime) -> str:
    """UTC, to the second: `2026-11-30T01:02:03Z`."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def http_date(value: str | None) -> str | None:
    """An HTTP date (`Last-Modified`) as ISO 8601, or None when unreadable."""
    if not value:
        return None
    try:
        return iso(parsedate_to_datetime(value))
    except (TypeError, ValueError):
        return None


def pdf_date(value: str | None) -> str | None:
    """A PDF date (`D:20240131120000+01'00'`) as ISO 8601, or None."""
    match = re.match(r"^D?:?(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?", (value or "").strip())
    if not match:
        return None
    parts = [int(p) if p else default for p, default in zip(match.groups(), (0, 1, 1, 0, 0, 0), strict=True)]
    try:
        year, month, day, hour, minute, second = parts
        return iso(datetime(year, month, day, hour, minute, second, tzinfo=UTC))
    except ValueError:
        return None


def language_tag(value: str | None) -> str | None:
    """The primary subtag of a declared language (`en-US, fr` → `en`), or None."""
    first = (value or "").split(",")[0].strip().split("-")[0].split("_")[0].lower()
    return first if re.fullmatch(r"[a-z]{2,3}", first) else None


def document_metadata(
    *, source: Metadata, extracted: Metadata, format: str, size: int, title: str, detected_language: str | None
) -> Metadata:
    """The metadata a document is stored with. The format's own statements win over the source's
    (a PDF's ModDate over the file's mtime); a declared language wins over the detected one."""
    merged = {**source, **{k: v for k, v in extracted.items() if v}}
    declared = language_tag(extracted.get("declaredLanguage")) or language_tag(source.get("declaredLanguage"))
    merged.pop("declaredLanguage", None)
    merged |= {
        "title": title,
        "contentType": CONTENT_TYPES.get(format, format),
        "language": declared or detected_language,
        "size": size,
    }
    return clean(merged)


@cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of the text's language (py3langid), or None when the text is too short or
    the guess is not confident."""
    sample = text[:_LANGUAGE_SAMPLE_CHARS]
    if len(sample.strip()) < _MIN_LANGUAGE_CHARS:
        return None
    language, probability = _identifier().classify(sample)
    return str(language) if probability >= 0.5 else None
