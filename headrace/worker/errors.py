"""Errors that decide a document's fate."""


class DocumentError(Exception):
    """This document cannot be ingested, and retrying will not help. It is recorded as failed with
    this message as its reason; the rest of the job goes on."""
