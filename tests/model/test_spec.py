"""The IngestionJob model: defaults, bounds, and errors that name the field."""

import pytest

from headrace.model import IngestionJobSpec, InvalidManifest, parse_manifest
from headrace.model import spec as spec_module


def manifest(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "headrace.io/v1alpha1",
        "kind": "IngestionJob",
        "metadata": {"name": "docs", "namespace": "team-a"},
        "spec": {"source": {"volume": {"path": "docs"}}, **spec},
    }


def problems(document: object) -> list[str]:
    with pytest.raises(InvalidManifest) as caught:
        parse_manifest(document)
    return caught.value.problems


def test_minimal_manifest_gets_documented_defaults() -> None:
    job = parse_manifest(manifest())
    assert job.spec.chunking.target_size == 1500
    assert job.spec.workers.desired == job.spec.workers.min == 1
    assert job.spec.retention == "Retain"
    assert job.spec.source.kind == "volume"
    assert job.spec.source.volume is not None
    assert job.spec.source.volume.include == ["**/*"]


def test_unknown_field_is_rejected_by_its_path() -> None:
    assert problems(manifest(chunking={"targetSize": 800, "chunkSize": 5})) == [
        "spec.chunking.chunkSize: unknown field"
    ]


def test_out_of_bounds_value_names_the_field_and_the_bound() -> None:
    (problem,) = problems(manifest(workers={"batchSize": 0}))
    assert problem.startswith("spec.workers.batchSize:")
    assert "greater than or equal to 1" in problem


def test_every_problem_is_reported_at_once() -> None:
    found = problems(manifest(retention="Forever", workers={"min": 5, "max": 2}, textSearchConfig="Bad Config"))
    assert {p.split(":")[0] for p in found} == {"spec.retention", "spec.workers", "spec.textSearchConfig"}


def test_cross_field_rules_name_both_fields() -> None:
    (overlap,) = problems(manifest(chunking={"targetSize": 400, "overlap": 300}))
    assert overlap.startswith("spec.chunking:") and "overlap (300)" in overlap and "targetSize (400)" in overlap


@pytest.mark.parametrize("source", [{}, {"volume": None}])
def test_a_source_must_be_set(source: dict[str, object]) -> None:
    document = manifest()
    document["spec"] = {"source": source}
    (problem,) = problems(document)
    assert problem.startswith("spec.source:") and "exactly one source" in problem


def test_parent_segments_in_volume_path_are_rejected() -> None:
    document = manifest()
    document["spec"] = {"source": {"volume": {"path": "../etc"}}}
    assert problems(document) == ["spec.source.volume.path: must not contain '..' segments"]


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("every tuesday", "has 2 fields; a schedule has five"),
        ("0 0 * * * *", "has 6 fields; a schedule has five"),  # seconds: not what the docs promise
        ("61 * * * *", "not a valid cron expression"),
        ("0 0 30 2 *", "never fires"),  # February 30th
        ("0 0 31 4,6 *", "never fires"),
    ],
)
def test_bad_cron_schedule_is_rejected(schedule: str, message: str) -> None:
    (problem,) = problems(manifest(schedule=schedule))
    assert problem.startswith("spec.schedule:") and message in problem


@pytest.mark.parametrize("schedule", ["30 2 * * *", "*/5 * * * 1-5", "0 0 29 2 *", "@daily"])
def test_good_cron_schedules_pass(schedule: str) -> None:
    assert parse_manifest(manifest(schedule=schedule)).spec.schedule == schedule


def test_wrong_kind_and_bad_name_are_named() -> None:
    document = manifest()
    document["kind"] = "Job"
    document["metadata"] = {"name": "Not_A_DNS_Label"}
    assert {p.split(":")[0] for p in problems(document)} == {"kind", "metadata.name"}


def test_manifest_round_trips_in_camel_case() -> None:
    job = parse_manifest(manifest(workers={"tasksPerWorker": 7}))
    wire = job.to_wire()
    assert wire["spec"]["workers"]["tasksPerWorker"] == 7  # type: ignore[index]
    assert parse_manifest(wire) == job


def test_fingerprints_track_what_changes_the_index() -> None:
    base = IngestionJobSpec.model_validate({"source": {"volume": {"path": "a"}}})
    rescaled = IngestionJobSpec.model_validate({"source": {"volume": {"path": "a"}}, "workers": {"max": 9}})
    rechunked = IngestionJobSpec.model_validate({"source": {"volume": {"path": "a"}}, "chunking": {"targetSize": 900}})
    moved = IngestionJobSpec.model_validate({"source": {"volume": {"path": "b"}}})
    assert base.run_fingerprint() == rescaled.run_fingerprint()
    assert base.content_fingerprint() != rechunked.content_fingerprint()
    assert base.run_fingerprint() != moved.run_fingerprint()
    assert base.content_fingerprint() == moved.content_fingerprint()


def test_changing_what_is_embedded_of_a_chunk_starts_a_run_for_jobs_with_embeddings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks embedded from another input (an earlier version embedded their text alone, this one
    their title too) need new vectors: a job with embeddings runs again, one without does not, and
    neither re-extracts (the content fingerprint stays)."""
    embedded = IngestionJobSpec.model_validate({"source": {"volume": {"path": "a"}}})
    keyword_only = IngestionJobSpec.model_validate(
        {"source": {"volume": {"path": "a"}}, "embedding": {"provider": "none"}}
    )
    before = [(s.run_fingerprint(), s.content_fingerprint()) for s in (embedded, keyword_only)]
    monkeypatch.setattr(spec_module, "EMBEDDING_INPUT", "chunk")
    after = [(s.run_fingerprint(), s.content_fingerprint()) for s in (embedded, keyword_only)]
    assert after[0][0] != before[0][0] and after[0][1] == before[0][1]
    assert after[1] == before[1]


def test_every_spec_field_is_documented() -> None:
    from pydantic import BaseModel

    missing = []

    def walk(model: type[BaseModel], path: str) -> None:
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(f"{path}.{name}")
            annotation = field.annotation
            for candidate in (*getattr(annotation, "__args__", ()), annotation):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    walk(candidate, f"{path}.{name}")

    walk(IngestionJobSpec, "spec")
    assert missing == []


def test_embedding_defaults_to_the_builtin_model_and_an_endpoint_needs_its_settings() -> None:
    job = parse_manifest(manifest())
    assert job.spec.embedding.provider == "builtin"
    assert job.spec.embedding_key() == "wordllama-l2-supercat/256"
    missing = problems(manifest(embedding={"provider": "endpoint"}))
    assert any("spec.embedding" in p and "endpoint" in p for p in missing)
    endpoint = {"url": "ftp://x", "model": "m", "dimensions": 0}
    found = problems(manifest(embedding={"provider": "endpoint", "endpoint": endpoint}))
    assert any("spec.embedding.endpoint.url" in p for p in found)
    assert any("spec.embedding.endpoint.dimensions" in p for p in found)


def test_a_model_change_starts_a_run_but_keeps_the_chunks() -> None:
    builtin = parse_manifest(manifest()).spec
    endpoint = {"url": "http://tei:8080/v1", "model": "bge", "dimensions": 384, "apiKeySecretRef": {"name": "tei-key"}}
    remote = parse_manifest(manifest(embedding={"provider": "endpoint", "endpoint": endpoint})).spec
    off = parse_manifest(manifest(embedding={"provider": "none"})).spec
    assert builtin.content_fingerprint() == remote.content_fingerprint() == off.content_fingerprint()
    assert len({builtin.run_fingerprint(), remote.run_fingerprint(), off.run_fingerprint()}) == 3
    assert remote.embedding_key() == "bge/384" and off.embedding_key() is None
    assert remote.secret_names() == ["tei-key"]
