"""Secrets as the operator mounts them: one folder per Secret, one file per key (see model.contract)."""

from pathlib import Path

from headrace.redaction import remember
from headrace.worker.errors import DocumentError

_MAX_SECRET_BYTES = 64 * 1024


class MissingSecret(DocumentError):
    """A Secret the spec references is not mounted, or lacks a required key."""


def read_secret(secrets_dir: Path, name: str, *, required: tuple[str, ...] = ()) -> dict[str, str]:
    """Every key of the Secret `name` mounted under `secrets_dir`, trailing newlines stripped.

    Kubernetes projects keys as symlinks next to its own `..data` bookkeeping entries, which are skipped.
    """
    folder = secrets_dir / name
    if not folder.is_dir():
        raise MissingSecret(f"Secret {name!r} is not mounted at {folder}")
    values = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        with entry.open("rb") as handle:
            values[entry.name] = handle.read(_MAX_SECRET_BYTES).decode().rstrip("\r\n")
    remember(values.values())  # from now on, no error text of this process carries them
    missing = [key for key in required if key not in values]
    if missing:
        raise MissingSecret(f"Secret {name!r} has no key {', '.join(missing)}")
    return values
