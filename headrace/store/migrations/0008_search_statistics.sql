-- compatible-from: 2
-- Search statistics: per job, every lexeme's document frequency and its best postings ("champion
-- lists", Manning et al., Introduction to Information Retrieval 7.1.3), so that keyword search reads
-- a few hundred postings per query word instead of every match (headrace/store/lexicon.py builds them,
-- headrace/store/search.py reads them; docs/operations.md, "Search statistics").
--
-- Expand only: two new tables and an index, which code of every earlier version ignores.

-- One row per job whose statistics were built: the collection they describe.
CREATE TABLE headrace.search_statistics (
    job_uid             uuid PRIMARY KEY REFERENCES headrace.jobs (uid) ON DELETE CASCADE,
    chunks              bigint NOT NULL,        -- N: the job's chunks at the build
    total_length        bigint NOT NULL,        -- the sum of their lengths (distinct lexemes, length(tsv))
    watermark           bigint NOT NULL,        -- the highest chunk id covered; newer chunks are the delta
    cap                 integer NOT NULL,       -- R: the longest postings list kept
    run                 integer NOT NULL,       -- the job's last finished run when built
    built_at            timestamptz NOT NULL DEFAULT now(),
    build_seconds       real NOT NULL DEFAULT 0
);

-- One row per (job, text-search config, lexeme): its document frequency, and its postings, at most
-- `cap` of them, best first by BM25's term weight tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len / avglen))
-- with the job's average length at the build (every posting when df <= cap). A posting is a chunk
-- id, the lexeme's count of positions in it (tf) and the chunk's length, as search counts them.
CREATE TABLE headrace.lexemes (
    job_uid             uuid NOT NULL REFERENCES headrace.jobs (uid) ON DELETE CASCADE,
    config              regconfig NOT NULL,
    lexeme              text NOT NULL,
    df                  integer NOT NULL,
    ids                 bigint[] NOT NULL,
    tfs                 integer[] NOT NULL,
    lens                integer[] NOT NULL,
    PRIMARY KEY (job_uid, config, lexeme)
);

-- The delta (a job's chunks stored after its statistics were built) is one range of this index.
CREATE INDEX IF NOT EXISTS chunks_job_id ON headrace.chunks (job_uid, id);

-- Tenant isolation as on chunks (0005_tenant_isolation.sql): a tenant reads its namespace's rows only
-- (a lexeme list is a summary of its chunks' text), and writes none: the owner builds them.
ALTER TABLE headrace.search_statistics ENABLE ROW LEVEL SECURITY;
ALTER TABLE headrace.lexemes ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_search_statistics ON headrace.search_statistics
    USING (job_uid = ANY ((SELECT headrace.tenant_job_uids())::uuid[]));
CREATE POLICY tenant_lexemes ON headrace.lexemes
    USING (job_uid = ANY ((SELECT headrace.tenant_job_uids())::uuid[]));

-- The tenant group roles granted before these tables existed (those that may read chunks) read them now;
-- later ones get it from headrace.grant_tenant_access.
DO $$
DECLARE
    tenant_group name;
BEGIN
    FOR tenant_group IN
        SELECT DISTINCT g.grantee FROM information_schema.role_table_grants g
        WHERE g.table_schema = 'headrace' AND g.table_name = 'chunks' AND g.privilege_type = 'SELECT'
          AND g.grantee <> (SELECT tableowner FROM pg_tables WHERE schemaname = 'headrace' AND tablename = 'chunks')
          AND g.grantee <> 'PUBLIC'
    LOOP
        EXECUTE format('GRANT SELECT ON headrace.search_statistics, headrace.lexemes TO %I', tenant_group);
    END LOOP;
END
$$;

-- What a tenant's workers need, as in 0006_embeddings.sql, and read access to the search statistics.
-- `spec_error` is back among the columns a worker may not update (0005 had it; 0006 left it out).
CREATE OR REPLACE FUNCTION headrace.grant_tenant_access(grantee name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job_columns text;
    run_columns text;
BEGIN
    SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position) INTO job_columns
    FROM information_schema.columns WHERE table_schema = 'headrace' AND table_name = 'jobs'
      AND column_name NOT IN ('uid', 'namespace', 'namespace_uid', 'name', 'generation', 'spec',
                              'spec_error', 'text_search_config', 'current_run', 'created_at', 'deleted_at');
    SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position) INTO run_columns
    FROM information_schema.columns WHERE table_schema = 'headrace' AND table_name = 'runs'
      AND column_name NOT IN ('job_uid', 'run', 'fingerprint');
    EXECUTE format('GRANT USAGE ON SCHEMA headrace TO %I', grantee);
    EXECUTE format('GRANT SELECT, UPDATE (%s) ON headrace.jobs TO %I', job_columns, grantee);
    EXECUTE format('GRANT SELECT, UPDATE (%s) ON headrace.runs TO %I', run_columns, grantee);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON headrace.tasks TO %I', grantee);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON headrace.documents, headrace.chunks TO %I', grantee);
    EXECUTE format('GRANT SELECT, INSERT ON headrace.job_events TO %I', grantee);
    EXECUTE format('GRANT SELECT ON headrace.embedding_spaces TO %I', grantee);
    EXECUTE format('GRANT SELECT ON headrace.search_statistics, headrace.lexemes TO %I', grantee);
    IF to_regclass('headrace.embeddings') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON headrace.embeddings TO %I', grantee);
    END IF;
    EXECUTE format('GRANT USAGE ON SEQUENCE headrace.tasks_id_seq, headrace.documents_id_seq, '
                   'headrace.chunks_id_seq, headrace.job_events_id_seq TO %I', grantee);
    EXECUTE format('GRANT EXECUTE ON FUNCTION headrace.tenant_namespace_uid(), headrace.tenant_job_uids() TO %I',
                   grantee);
END
$$;
REVOKE ALL ON FUNCTION headrace.grant_tenant_access(name) FROM PUBLIC;
