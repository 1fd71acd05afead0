"""A hostile tenant's attempts: the API fixtures (fake cluster, settings, seeded jobs) are shared with tests/api."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from headrace.store import tenants
from tests.api.conftest import client, cluster, kmock_options, seeded, settings
from tests.conftest import with_database

__all__ = ["client", "cluster", "kmock_options", "seeded", "settings"]


@pytest.fixture
async def owner_database(postgres_server: str) -> AsyncIterator[tuple[str, str, str]]:
    """(owner's URL, admin's URL of the same database, role prefix): a database owned by a CREATEROLE role."""
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    owner, database = f"{prefix}owner", f"{prefix}db"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'CREATE ROLE "{owner}" LOGIN CREATEROLE')
        await admin.execute(f'CREATE DATABASE "{database}" OWNER "{owner}"')
    finally:
        await admin.close()
    admin_url = with_database(postgres_server, database)
    yield tenants.TenantCredential(owner, "", datetime.now(UTC)).url(admin_url), admin_url, prefix
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        roles = [
            r["rolname"]
            for r in await admin.fetch("SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", prefix)
        ]
        for role in sorted(roles, key=lambda name: (name == owner, name.endswith("_tenant"))):  # members first
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await admin.close()
