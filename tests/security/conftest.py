"""A hostile tenant's attempts: the API fixtures (fake cluster, settings) are shared with tests/api."""

from tests.api.conftest import cluster, kmock_options, settings

__all__ = ["cluster", "kmock_options", "settings"]
