"""Starting the operator: a registry bound to the configuration, and kopf's run loop."""

import asyncio
from collections.abc import Collection

import kopf

from headrace.operator.config import OperatorConfig
from headrace.operator.handlers import register


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """A fresh registry holding Headrace's handlers, bound to this configuration."""
    registry = kopf.OperatorRegistry()
    register(registry, config)
    return registry


def run(
    config: OperatorConfig,
    *,
    namespaces: Collection[str] = (),
    liveness_endpoint: str | None = None,
) -> None:
    """Run the operator until it is stopped: cluster-wide when no namespaces are given."""
    # One operator replica (the chart uses strategy: Recreate), so kopf's peering is off.
    asyncio.run(
        kopf.operator(
            registry=build_registry(config),
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=True,
            liveness_endpoint=liveness_endpoint,
        )
    )
