"""A search's scope: the jobs it covers, and the vector spaces their chunks are embedded in."""

import uuid
from dataclasses import dataclass, field

from headrace.model import Embedding
from headrace.store import vectors
from headrace.store.db import Connection, Pool


@dataclass(frozen=True)
class ScopedJob:
    uid: uuid.UUID
    namespace: str
    name: str
    config: str
    embedding: Embedding

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Scope:
    """The jobs a search covers and the vector spaces their chunks are embedded in."""

    jobs: list[ScopedJob]
    spaces: dict[int, vectors.Space] = field(default_factory=dict)
    space_of: dict[uuid.UUID, int] = field(default_factory=dict)
    statistics: bool = False
    """Whether the database has search statistics (statistics.py; a schema before 0008 has none)."""

    def jobs_in(self, space_id: int) -> list[uuid.UUID]:
        return [uid for uid, sid in self.space_of.items() if sid == space_id]

    def describe_spaces(self) -> str:
        parts = []
        for space_id, space in sorted(self.spaces.items()):
            names = sorted(j.label for j in self.jobs if self.space_of.get(j.uid) == space_id)
            parts.append(f"{space.model} ({space.dimensions} dimensions): {', '.join(names)}")
        return "; ".join(parts)


async def scope(
    conn: Pool | Connection, *, namespaces: list[str] | None, job: str | None, job_uid: uuid.UUID | None
) -> Scope:
    """The jobs these filters select (`namespaces=None`: every namespace), and for each the vector
    space its spec names, when it exists."""
    # One round trip: the jobs, whether vectors can exist, and every vector space (a handful of rows).
    rows = await conn.fetch(
        """
        SELECT uid, namespace, name, text_search_config::text AS config, spec->'embedding' AS embedding,
               to_regclass('headrace.embeddings') IS NOT NULL AS vectors,
               to_regclass('headrace.search_statistics') IS NOT NULL AS statistics,
               (SELECT jsonb_agg(jsonb_build_array(id, model, dimensions)) FROM headrace.embedding_spaces) AS spaces
        FROM headrace.jobs
        -- Retained data (its IngestionJob deleted) is not served until a new IngestionJob adopts it.
        WHERE deleted_at IS NULL
          AND ($1::text[] IS NULL OR namespace = ANY($1::text[]))
          AND ($2::text IS NULL OR name = $2) AND ($3::uuid IS NULL OR uid = $3)
        """,
        namespaces,
        job,
        job_uid,
    )
    jobs = [
        ScopedJob(r["uid"], r["namespace"], r["name"], r["config"], Embedding.model_validate(r["embedding"] or {}))
        for r in rows
    ]
    keys = {j.uid: key for j in jobs if (key := _space_key(j.embedding)) is not None}
    statistics = bool(rows and rows[0]["statistics"])
    if not keys or not rows[0]["vectors"]:
        return Scope(jobs, statistics=statistics)
    spaces = (vectors.Space(int(i), str(m), int(d)) for i, m, d in rows[0]["spaces"] or [])
    found = {key: space for space in spaces if (key := (space.model, space.dimensions)) in keys.values()}
    space_of = {uid: found[key].id for uid, key in keys.items() if key in found}
    return Scope(jobs, {s.id: s for s in found.values()}, space_of, statistics)


def _space_key(embedding: Embedding) -> tuple[str, int] | None:
    if embedding.model_name is None or embedding.dimensions is None:
        return None
    return embedding.model_name, embedding.dimensions
