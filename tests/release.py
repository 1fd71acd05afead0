"""The previous release, for tests that run its code or install its chart beside this tree's.

PREVIOUS_RELEASE is the commit taken as the last release: bump it to the last release's commit when
releasing. Its files are unpacked with `git archive`; without git history (a shallow clone) the tests
needing them are skipped, saying so.
"""

import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREVIOUS_RELEASE = "50c854a4e9a7541e89e2b9ae186dde2999244571"
ROLES_RELEASE = "93a3526e96c0d79ea23cfd93197415555f916124"
"""The last commit whose workers held a Postgres role of their namespace (`database.tenantCredentials`),
before the ingest service: the upgrade that must drop those roles and Secrets."""


def unpack_previous_release(folder: Path, *paths: str, commit: str = PREVIOUS_RELEASE) -> Path:
    """`paths` (e.g. `headrace`, `charts/headrace`) as they were at `commit` (PREVIOUS_RELEASE), under `folder`."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, *paths],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"no git history to take the previous release from: {done.stderr.decode().strip()}")
    with tarfile.open(fileobj=BytesIO(done.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder
