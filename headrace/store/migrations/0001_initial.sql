-- Jobs, runs, the task queue, documents, chunks and job events.
CREATE SCHEMA IF NOT EXISTS headrace;

-- One row per IngestionJob, keyed by the custom resource's uid.
CREATE TABLE headrace.jobs (
    uid                 uuid PRIMARY KEY,
    namespace           text NOT NULL,
    name                text NOT NULL,
    generation          bigint NOT NULL DEFAULT 0,
    spec                jsonb NOT NULL,
    text_search_config  regconfig NOT NULL DEFAULT 'english',
    current_run         integer NOT NULL DEFAULT 0,
    phase               text NOT NULL DEFAULT 'Pending',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz
);
CREATE INDEX jobs_namespace_name ON headrace.jobs (namespace, name);

-- One row per run: a discovery of the source and the ingestion that follows it.
CREATE TABLE headrace.runs (
    job_uid             uuid NOT NULL REFERENCES headrace.jobs (uid) ON DELETE CASCADE,
    run                 integer NOT NULL,
    reason              text NOT NULL DEFAULT '',
    fingerprint         text NOT NULL,
    discovered          integer NOT NULL DEFAULT 0,
    discovery_done      boolean NOT NULL DEFAULT false,
    deleted             integer NOT NULL DEFAULT 0,
    error               text,
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    PRIMARY KEY (job_uid, run)
);

-- The work queue. A task is pending (possibly waiting for available_at), leased, done or dead.
CREATE TABLE headrace.tasks (
    id                  bigserial PRIMARY KEY,
    job_uid             uuid NOT NULL REFERENCES headrace.jobs (uid) ON DELETE CASCADE,
    run                 integer NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('discover', 'ingest')),
    dedupe_key          text NOT NULL,
    payload             jsonb NOT NULL DEFAULT '{}',
    state               text NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'leased', 'done', 'dead')),
    attempts            integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL DEFAULT 5,
    available_at        timestamptz NOT NULL DEFAULT now(),
    lease_token         uuid,
    leased_by           text,
    lease_expires_at    timestamptz,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    UNIQUE (job_uid, run, dedupe_key)
);
CREATE INDEX tasks_ready ON headrace.tasks (job_uid, available_at, id) WHERE state = 'pending';
CREATE INDEX tasks_leased ON headrace.tasks (job_uid, lease_expires_at) WHERE state = 'leased';
CREATE INDEX tasks_dead ON headrace.tasks (job_uid) WHERE state = 'dead';

-- Documents, unique by (job, source URI). `run` and `outcome` say what the latest run did to it.
CREATE TABLE headrace.documents (
    id                  bigserial PRIMARY KEY,
    job_uid             uuid NOT NULL REFERENCES headrace.jobs (uid) ON DELETE CASCADE,
    uri                 text NOT NULL,
    title               text NOT NULL DEFAULT '',
    state               text NOT NULL CHECK (state IN ('ingested', 'failed')),
    error               text,
    content_hash        text,
    fingerprint         text,
    source_version      text,
    format              text,
    bytes               bigint NOT NULL DEFAULT 0,
    chunk_count         integer NOT NULL DEFAULT 0,
    metadata            jsonb NOT NULL DEFAULT '{}',
    run                 integer NOT NULL,
    outcome             text NOT NULL CHECK (outcome IN ('added', 'updated', 'unchanged', 'failed')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_uid, uri)
);
CREATE INDEX documents_run ON headrace.documents (job_uid, run, outcome);
CREATE INDEX documents_failed ON headrace.documents (job_uid, id) WHERE state = 'failed';

-- Chunks: the unit of search. The tsvector is generated with the job's text-search config.
CREATE TABLE headrace.chunks (
    id                  bigserial PRIMARY KEY,
    document_id         bigint NOT NULL REFERENCES headrace.documents (id) ON DELETE CASCADE,
    job_uid             uuid NOT NULL,
    ordinal             integer NOT NULL,
    page                integer,
    content             text NOT NULL,
    config              regconfig NOT NULL,
    tsv                 tsvector GENERATED ALWAYS AS (to_tsvector(config, content)) STORED,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX chunks_tsv ON headrace.chunks USING gin (tsv);
CREATE INDEX chunks_job ON headrace.chunks (job_uid);

-- What happened to a job, in order: the source for Kubernetes Events and the API's event stream.
CREATE TABLE headrace.job_events (
    id                  bigserial PRIMARY KEY,
    job_uid             uuid NOT NULL REFERENCES headrace.jobs (uid) ON DELETE CASCADE,
    run                 integer NOT NULL,
    type                text NOT NULL CHECK (type IN ('Normal', 'Warning')),
    reason              text NOT NULL,
    message             text NOT NULL DEFAULT '',
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_events_job ON headrace.job_events (job_uid, id);
