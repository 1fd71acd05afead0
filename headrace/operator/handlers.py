"""kopf registration: each handler is a few lines that call a typed function in `reconcile`."""

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import kopf

from headrace.model import GROUP, PLURAL, VERSION
from headrace.operator import metrics, reconcile
from headrace.operator.kopf_setup import configure
from headrace.operator.kube import credentials
from headrace.operator.metrics import PHASES, reconciling
from headrace.operator.settings import OperatorSettings
from headrace.operator.startup import open_operator
from headrace.operator.status import Event
from headrace.redaction import redact
from headrace.store.db import close_pool
from headrace.store.outage import ride_out

RESOURCE = (GROUP, VERSION, PLURAL)


def _post(body: kopf.Body, events: list[Event]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=redact(event.message))


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Put Headrace's handlers into `registry`, bound to `config`.

    Each reconcile step is idempotent, so one that lost its database connection is run again whole
    (`ride_out`) once Postgres is back, instead of waiting out kopf's one-minute retry.
    """

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings)
        memo["operator"] = await open_operator(config)
        if config.metrics_port is not None:
            memo["stop_metrics"] = metrics.serve(config.metrics_port)
        memo["statistics"] = asyncio.create_task(reconcile.build_statistics_forever(memo["operator"]))

    @kopf.on.login(registry=registry)
    def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
        connection = credentials(**kwargs)
        if connection is not None:
            # Our own client for Jobs and HPAs talks to the same cluster with the same credentials.
            operator: reconcile.Operator = memo["operator"]
            operator.kube.connect(connection)
        return connection

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        if "stop_metrics" in memo:
            memo["stop_metrics"]()
        if "statistics" in memo:
            memo["statistics"].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await memo["statistics"]
        operator: reconcile.Operator | None = memo.get("operator")
        if operator is not None:
            await operator.kube.close()
            await close_pool(operator.pool)

    @kopf.on.resume(*RESOURCE, registry=registry)
    @kopf.on.create(*RESOURCE, registry=registry)
    @kopf.on.update(*RESOURCE, field="spec", registry=registry)
    async def apply(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        async with reconciling("apply"):
            _post(body, await ride_out(reconcile.apply_spec, memo["operator"], body, patch, now=datetime.now(UTC)))
        PHASES.observe(body, patch)

    @kopf.on.update(*RESOURCE, field="metadata.annotations", registry=registry)
    async def requested(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        # `kubectl annotate ... run-requested-at=...`: act now rather than at the next timer tick.
        _post(body, await ride_out(reconcile.observe, memo["operator"], body, patch, now=datetime.now(UTC)))

    def needs_observe(body: kopf.Body, **_: Any) -> bool:
        return reconcile.needs_observe(body)

    # Only jobs with a run in progress, a schedule or a waiting request are looked at: kopf stops the timer
    # of a job that stops matching and starts it again when it matches (e.g. after a new annotation).
    @kopf.timer(
        *RESOURCE,
        interval=config.observe_interval,
        initial_delay=config.observe_interval,
        when=needs_observe,
        registry=registry,
    )
    async def observe(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        async with reconciling("observe"):
            _post(body, await ride_out(reconcile.observe, memo["operator"], body, patch, now=datetime.now(UTC)))
        PHASES.observe(body, patch)

    @kopf.on.event("", "v1", "namespaces", registry=registry)
    async def namespace(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        metadata = event["object"].get("metadata") or {}
        if metadata.get("name") and metadata.get("uid"):
            deleted = event["type"] == "DELETED"
            await ride_out(
                reconcile.namespace_changed,
                memo["operator"],
                name=metadata["name"],
                uid=metadata["uid"],
                deleted=deleted,
            )

    @kopf.on.delete(*RESOURCE, registry=registry)
    async def delete(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        async with reconciling("delete"):
            outcome = await ride_out(reconcile.finalize, memo["operator"], body)
        PHASES.forget(body)
        logger.info(f"{outcome} the indexed data of the IngestionJob (spec.retention)")
