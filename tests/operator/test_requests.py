"""Run now and retry failed, asked for by annotation (after Flux's reconcile.fluxcd.io/requestedAt):
each value is acted on once and recorded in status; a request made during a run waits for it to end."""

import uuid
from typing import Any

import kmock
import kopf

from headrace.operator import reconcile
from headrace.operator.handlers import glance
from headrace.operator.reconcile import Operator
from headrace.store import documents, jobs, queue
from tests.operator.conftest import ij
from tests.operator.test_reconcile import apply, drain, exists, observe

RUN = "headrace.io/run-requested-at"
RETRY = "headrace.io/retry-failed-requested-at"


def needs_observe(raw: dict[str, Any]) -> bool:
    """Whether the observe timer's filter lets the timer look at `raw`."""
    return reconcile.needs_observe(glance(kopf.Body(raw)))


def annotate(raw: dict[str, Any], key: str, value: str) -> dict[str, Any]:
    raw["metadata"].setdefault("annotations", {})[key] = value
    return raw


async def finished(op: Operator) -> dict[str, Any]:
    """A job whose first run finished."""
    raw, _ = await apply(op, ij())
    await drain(op, raw["metadata"]["uid"])
    raw, _ = await observe(op, raw)
    assert raw["status"]["phase"] == "Succeeded"
    return raw


async def test_run_now_starts_one_run_per_value_with_an_unchanged_spec(
    op: Operator, emulator: kmock.KubernetesEmulator
) -> None:
    raw = await finished(op)
    assert not needs_observe(raw)  # a finished job costs the timer nothing
    raw = annotate(raw, RUN, "2026-11-30T01:00:00+00:00")
    assert needs_observe(raw)  # until someone asks for a run

    raw, events = await observe(op, raw)
    assert raw["status"]["run"] == 2 and raw["status"]["phase"] == "Running"
    assert raw["status"]["lastHandledRunRequest"] == "2026-11-30T01:00:00+00:00"
    assert [e.reason for e in events][:2] == ["RunStarted", "CreatedJob"]
    assert exists(emulator, "batch/v1/jobs", "handbook-run-2")
    uid = uuid.UUID(raw["metadata"]["uid"])
    assert (await queue.counts(op.pool, uid))["pending"] == 1  # a full discovery: unchanged docs skip by hash

    # Acted on once: neither the timer nor a restart (resume) starts it again.
    await drain(op, raw["metadata"]["uid"])
    raw, _ = await observe(op, raw)
    raw, _ = await apply(op, raw)
    assert raw["status"]["run"] == 2 and raw["status"]["phase"] == "Succeeded"
    # A new value is a new request.
    raw, _ = await observe(op, annotate(raw, RUN, "2026-11-30T02:00:00+00:00"))
    assert raw["status"]["run"] == 3


async def test_a_request_during_a_run_waits_for_it_to_end(op: Operator, emulator: kmock.KubernetesEmulator) -> None:
    raw, _ = await apply(op, ij())
    raw, _ = await observe(op, annotate(raw, RUN, "now"))
    assert raw["status"]["run"] == 1 and "lastHandledRunRequest" not in raw["status"]
    await drain(op, raw["metadata"]["uid"])
    raw, _ = await observe(op, raw)
    assert raw["status"]["run"] == 2 and raw["status"]["lastHandledRunRequest"] == "now"


async def test_an_operator_restart_between_start_and_status_does_not_start_twice(
    op: Operator, emulator: kmock.KubernetesEmulator
) -> None:
    raw = annotate(await finished(op), RUN, "once")
    await observe(op, raw)  # started run 2, but its status patch was lost
    again, _ = await observe(op, raw)
    assert again["status"]["run"] == 2 and again["status"]["lastHandledRunRequest"] == "once"


async def test_retry_failed_enqueues_only_the_failed_documents(
    op: Operator, emulator: kmock.KubernetesEmulator
) -> None:
    raw, _ = await apply(op, ij())
    uid = uuid.UUID(raw["metadata"]["uid"])
    await documents.record_failures(op.pool, uid, 1, {"a.pdf": "extraction timed out", "b.zip!/inner.txt": "no text"})
    await drain(op, raw["metadata"]["uid"], total=3)
    raw, _ = await observe(op, raw)
    raw, events = await observe(op, annotate(raw, RETRY, "2026-11-30T03:00:00Z"))
    assert raw["status"]["run"] == 2 and raw["status"]["lastHandledRetryRequest"] == "2026-11-30T03:00:00Z"
    assert "retry of the 2 failed documents of run 1" in events[0].message
    tasks = await op.pool.fetch("SELECT kind, payload FROM headrace.tasks WHERE job_uid = $1 AND run = 2", uid)
    assert [t["kind"] for t in tasks] == ["ingest"]  # no discovery: nothing is listed again
    uris = [d["uri"] for d in tasks[0]["payload"]["documents"]]
    assert uris == ["a.pdf", "b.zip"]  # an archive entry is retried through its archive
    state = await jobs.run_state(op.pool, uid)
    assert state is not None and state.discovery_done and state.progress.total == 2


def _body(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    raw = ij(spec={"source": {"volume": {"claimName": "d"}}, **spec})
    return {**raw, "status": {"observedGeneration": 1, **status}}


def test_the_timer_looks_only_at_jobs_with_something_to_look_at() -> None:
    assert needs_observe(_body({"phase": "Running"}))
    assert needs_observe(_body({"phase": "Suspended"}))
    assert needs_observe(_body({"phase": "Succeeded", "workers": {"active": 1}}))  # workers exiting
    assert needs_observe(_body({"phase": "Failed"}, schedule="0 * * * *"))
    assert needs_observe(ij())  # never reconciled yet
    assert not needs_observe(_body({"phase": "Succeeded", "workers": {"active": 0}}))
    assert not needs_observe(_body({"phase": "Failed"}))
    handled = _body({"phase": "Succeeded", "lastHandledRunRequest": "t1"})
    handled["metadata"]["annotations"] = {RUN: "t1"}
    assert not needs_observe(handled)
