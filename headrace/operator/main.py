"""Starting the operator: a registry bound to the configuration, and kopf's run loop."""

import asyncio

import kopf

from headrace.operator.config import OperatorSettings
from headrace.operator.handlers import register


def build_registry(config: OperatorSettings) -> kopf.OperatorRegistry:
    """A fresh registry holding Headrace's handlers, bound to this configuration."""
    registry = kopf.OperatorRegistry()
    register(registry, config)
    return registry


def run(config: OperatorSettings) -> None:
    """Run the operator until it is stopped: cluster-wide when no namespaces are given."""
    # One operator replica (the chart uses strategy: Recreate), so kopf's peering is off.
    asyncio.run(
        kopf.operator(
            registry=build_registry(config),
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            standalone=True,
            liveness_endpoint=config.liveness,
        )
    )
