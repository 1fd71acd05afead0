"""Extractors for binary document formats (PDF, DOCX) and structured text (JSON, CSV)."""
