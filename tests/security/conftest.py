"""A hostile tenant's attempts: the API fixtures (fake cluster, settings, seeded jobs) are shared with tests/api."""

from tests.api.conftest import client, cluster, kmock_options, seeded, settings

__all__ = ["client", "cluster", "kmock_options", "seeded", "settings"]
