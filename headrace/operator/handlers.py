"""kopf registration, and the edge between kopf and the rest of the operator.

Each handler reads kopf's body once into an `Observation`, calls a typed plain function in `reconcile`
(which returns a `Reconciled`) and is the only place that writes kopf's patch and posts Events.
"""

import asyncio
import contextlib
import logging
import uuid
from dataclasses import fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import kopf

from headrace.model import GROUP, PLURAL, VERSION, InvalidManifest, parse_manifest
from headrace.model.contract import RETRY_FAILED_ANNOTATION, RUN_REQUEST_ANNOTATION
from headrace.operator import metrics, namespaces, reconcile
from headrace.operator import status as st
from headrace.operator.admission import admit
from headrace.operator.kopf_setup import configure
from headrace.operator.kube import credentials
from headrace.operator.metrics import PHASES, reconciling
from headrace.operator.observation import Glance, Observation
from headrace.operator.reconcile import Operator, Reconciled
from headrace.operator.resources.job import InvalidSpec
from headrace.operator.settings import OperatorSettings
from headrace.operator.startup import open_operator
from headrace.operator.statistics import build_statistics_forever
from headrace.redaction import redact
from headrace.store.db import close_pool
from headrace.store.outage import ride_out

log = logging.getLogger(__name__)

RESOURCE = (GROUP, VERSION, PLURAL)


def glance(body: kopf.Body) -> Glance:
    """What the handlers need of kopf's body but its spec's meaning, typed. (Read from the raw mappings:
    kopf's views cost several times as much, and the timer's filter reads every job at every change.)"""
    metadata = body.get("metadata") or {}
    reported = body.get("status") or {}
    annotations = metadata.get("annotations") or {}
    return Glance(
        namespace=metadata.get("namespace") or "",
        name=metadata.get("name") or "",
        uid=uuid.UUID(metadata["uid"]),
        generation=metadata.get("generation"),
        spec=MappingProxyType(dict(body.get("spec") or {})),
        status=st.parse_status(reported),
        reported=MappingProxyType(dict(reported)),
        run_request=annotations.get(RUN_REQUEST_ANNOTATION),
        retry_request=annotations.get(RETRY_FAILED_ANNOTATION),
        deleting=bool(metadata.get("deletionTimestamp")),
    )


def observation(body: kopf.Body, config: OperatorSettings) -> Observation:
    """What the handlers need of kopf's body, typed: its `glance`, and the spec as a model or the reason it
    is refused (every bad field named), so a bad spec becomes a condition instead of a crash loop."""
    seen, metadata = glance(body), body.get("metadata") or {}
    document = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {key: metadata.get(key) for key in ("name", "namespace", "uid", "generation") if metadata.get(key)},
        "spec": dict(seen.spec),
    }
    job, error = None, None
    try:
        job = parse_manifest(document, origin=f"{metadata.get('namespace')}/{metadata.get('name')}")
        admit(job, config)
    except InvalidManifest as exc:
        job, error = None, "; ".join(exc.problems)
    except InvalidSpec as exc:
        job, error = None, str(exc)
    return Observation(**{field.name: getattr(seen, field.name) for field in fields(seen)}, job=job, spec_error=error)


def write(patch: kopf.Patch, seen: Glance, reconciled: Reconciled) -> None:
    """Put what a step decided into kopf's patch: the replicas the builtin autoscaler wants, and the status
    fields whose value changed (a quiet job costs no API writes)."""
    if reconciled.replicas is not None:
        patch.spec["workers"] = {"replicas": reconciled.replicas}
    if reconciled.status is None:
        return
    for key, value in st.status_patch(dict(seen.reported), reconciled.status).items():
        patch.status[key] = value
    old, new = seen.reported.get("phase"), reconciled.status.phase
    if old != new:
        log.info(
            "Changed phase", extra={"namespace": seen.namespace, "ingestionjob": seen.name, "from": old, "to": new}
        )


def _post(body: kopf.Body, reconciled: Reconciled) -> None:
    for event in reconciled.events:
        kopf.event(body, type=event.type, reason=event.reason, message=redact(event.message))


def _phase(seen: Glance, reconciled: Reconciled) -> str | None:
    """The phase the object has once the patch is applied."""
    return (reconciled.status.phase if reconciled.status else None) or seen.reported.get("phase")


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Put Headrace's handlers into `registry`, bound to `config`.

    Each reconcile step is idempotent, so one that lost its database connection is run again whole
    (`ride_out`) once Postgres is back, instead of failing the handler; any other failure is retried at
    the next observe tick (`kopf_setup.configure`).
    """

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings, observe_interval=config.observe_interval)
        memo["operator"], memo["runtime"] = await open_operator(config)
        if config.metrics_port is not None:
            memo["stop_metrics"] = metrics.serve(config.metrics_port)
        memo["statistics"] = asyncio.create_task(
            build_statistics_forever(memo["operator"].pool, interval=config.observe_interval)
        )

    @kopf.on.login(registry=registry)
    def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
        connection = credentials(**kwargs)
        if connection is not None:
            # Our own client for Jobs and HPAs talks to the same cluster with the same credentials.
            operator: Operator = memo["operator"]
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
        operator: Operator | None = memo.get("operator")
        if operator is not None:
            await operator.kube.close()
            await close_pool(operator.pool)

    @kopf.on.resume(*RESOURCE, registry=registry)
    @kopf.on.create(*RESOURCE, registry=registry)
    @kopf.on.update(*RESOURCE, field="spec", registry=registry)
    async def apply(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        async with reconciling("apply"):
            seen = observation(body, config)
            done = await ride_out(reconcile.apply_spec, memo["operator"], memo["runtime"], seen, now=datetime.now(UTC))
            write(patch, seen, done)
            _post(body, done)
        PHASES.observe(seen.namespace, seen.name, _phase(seen, done))

    @kopf.on.update(*RESOURCE, field="metadata.annotations", registry=registry)
    async def requested(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        # `kubectl annotate ... run-requested-at=...`: act now rather than at the next timer tick.
        seen = observation(body, config)
        done = await ride_out(reconcile.observe, memo["operator"], memo["runtime"], seen, now=datetime.now(UTC))
        write(patch, seen, done)
        _post(body, done)

    def needs_observe(body: kopf.Body, **_: Any) -> bool:
        return reconcile.needs_observe(glance(body))

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
            seen = observation(body, config)
            done = await ride_out(reconcile.observe, memo["operator"], memo["runtime"], seen, now=datetime.now(UTC))
            write(patch, seen, done)
            _post(body, done)
        PHASES.observe(seen.namespace, seen.name, _phase(seen, done))

    @kopf.on.event("", "v1", "namespaces", registry=registry)
    async def namespace(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        metadata = event["object"].get("metadata") or {}
        if metadata.get("name") and metadata.get("uid"):
            deleted = event["type"] == "DELETED"
            await ride_out(
                namespaces.namespace_changed,
                memo["operator"].pool,
                name=metadata["name"],
                uid=metadata["uid"],
                deleted=deleted,
            )

    @kopf.on.delete(*RESOURCE, registry=registry)
    async def delete(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        async with reconciling("delete"):
            seen = glance(body)
            outcome = await ride_out(reconcile.finalize, memo["operator"], seen)
        PHASES.forget(seen.namespace, seen.name)
        logger.info(f"{outcome} the indexed data of the IngestionJob (spec.retention)")
