"""The worker API's answers that carry store records (a leased task, a vector space, a known document) keep
their bytes on the wire, and a worker reads them back as the same records, also from a newer service."""

import json
import uuid

from headrace.store import queue, vectors
from headrace.store.documents import KnownDocument
from headrace.worker import wire

JOB = uuid.UUID("6f1c3a52-0000-4000-8000-000000000001")
LEASE = uuid.UUID("6f1c3a52-0000-4000-8000-000000000002")
TASK = queue.Task(7, JOB, 2, "ingest", {"uris": ["file:///a"]}, 1, 5, LEASE)
SPACE = vectors.Space(3, "wordllama-l2-supercat-256", 256)
KNOWN = KnownDocument("file:///a", "ingested", "h", "f", None, 2, format="text", embedding_space=3)


def test_records_travel_in_camel_case_field_by_field() -> None:
    assert wire.LeaseAnswer(acked=[4], leased=[TASK]).model_dump_json(by_alias=True) == (
        '{"acked":[4],"leased":[{"id":7,"jobUid":"6f1c3a52-0000-4000-8000-000000000001","run":2,"kind":"ingest",'
        '"payload":{"uris":["file:///a"]},"attempts":1,"maxAttempts":5,'
        '"leaseToken":"6f1c3a52-0000-4000-8000-000000000002"}]}'
    )
    assert wire.SpaceAnswer(space=SPACE).model_dump_json(by_alias=True) == (
        '{"space":{"id":3,"model":"wordllama-l2-supercat-256","dimensions":256}}'
    )
    assert wire.KnownAnswer(documents=[KNOWN]).model_dump_json(by_alias=True) == (
        '{"documents":[{"uri":"file:///a","state":"ingested","contentHash":"h","fingerprint":"f",'
        '"sourceVersion":null,"run":2,"format":"text","embeddingSpace":3}]}'
    )


def test_a_worker_reads_the_records_back_and_ignores_fields_a_newer_service_adds() -> None:
    for answer, field, record in (
        (wire.LeaseAnswer(acked=[], leased=[TASK]), "leased", [TASK]),
        (wire.TasksAnswer(tasks=[TASK]), "tasks", [TASK]),
        (wire.SpaceAnswer(space=SPACE), "space", SPACE),
        (wire.KnownAnswer(documents=[KNOWN]), "documents", [KNOWN]),
    ):
        sent = json.loads(answer.model_dump_json(by_alias=True))
        inner = sent[field][0] if isinstance(sent[field], list) else sent[field]
        inner["addedLater"] = True
        read = type(answer).model_validate_json(json.dumps(sent))
        assert getattr(read, field) == record
