-- compatible-from: 2
-- Embeddings for semantic and hybrid search, in pgvector.
--
-- pgvector is not a trusted extension: only a superuser (or a managed service's admin role) can
-- create it. Try, and carry on without it: Headrace then searches by keywords only and says so
-- (readyz, a job condition). `headrace.ensure_vectors()` creates what needs the extension once it
-- is there; every migrate calls it, so an admin's later `CREATE EXTENSION vector` is picked up.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS vector;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'headrace: pgvector not available (%); search stays keyword-only', SQLERRM;
END
$$;

-- One row per (model, dimensions): vectors of two spaces are never compared.
CREATE TABLE headrace.embedding_spaces (
    id                  serial PRIMARY KEY,
    model               text NOT NULL,
    dimensions          integer NOT NULL CHECK (dimensions BETWEEN 1 AND 16000),
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model, dimensions)
);

-- The space a document's chunks were embedded in (NULL: none). A document whose chunks are current
-- but whose space differs from its job's is re-embedded from its stored chunks.
ALTER TABLE headrace.documents ADD COLUMN embedding_space integer REFERENCES headrace.embedding_spaces (id);

-- Searchable metadata (title, language, content type, ...) is matched with `@>`.
CREATE INDEX documents_metadata ON headrace.documents USING gin (metadata jsonb_path_ops);

CREATE FUNCTION headrace.ensure_vectors() RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    tenant_group name;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN
        RETURN false;
    END IF;
    -- One table for every space, keyed by chunk; job_uid is here so row-level security and
    -- per-job deletes need no join. Each space gets its own partial HNSW index over the vectors
    -- cast to its dimension (see headrace.ensure_space_index), since an index needs one dimension.
    CREATE TABLE IF NOT EXISTS headrace.embeddings (
        chunk_id            bigint PRIMARY KEY REFERENCES headrace.chunks (id) ON DELETE CASCADE,
        job_uid             uuid NOT NULL,
        space_id            integer NOT NULL REFERENCES headrace.embedding_spaces (id),
        embedding           vector NOT NULL
    );
    CREATE INDEX IF NOT EXISTS embeddings_job ON headrace.embeddings (job_uid, space_id);
    -- Tenant isolation as on chunks (0005_tenant_isolation.sql), set here rather than in a migration
    -- so it holds whenever the table is created: at the migration, or later, after an admin's
    -- CREATE EXTENSION vector.
    ALTER TABLE headrace.embeddings ENABLE ROW LEVEL SECURITY;
    IF NOT EXISTS (
        SELECT 1 FROM pg_policies WHERE schemaname = 'headrace' AND tablename = 'embeddings'
          AND policyname = 'tenant_embeddings'
    ) THEN
        CREATE POLICY tenant_embeddings ON headrace.embeddings
            USING (job_uid = ANY ((SELECT headrace.tenant_job_uids())::uuid[]));
    END IF;
    -- The tenant group roles granted before the table existed (those that may read chunks) get it now;
    -- later ones get it from headrace.grant_tenant_access.
    FOR tenant_group IN
        SELECT DISTINCT g.grantee FROM information_schema.role_table_grants g
        WHERE g.table_schema = 'headrace' AND g.table_name = 'chunks' AND g.privilege_type = 'SELECT'
          AND g.grantee <> (SELECT tableowner FROM pg_tables WHERE schemaname = 'headrace' AND tablename = 'chunks')
          AND g.grantee <> 'PUBLIC'
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON headrace.embeddings TO %I', tenant_group);
    END LOOP;
    RETURN true;
END
$fn$;

-- What a tenant's workers need, as in 0005_tenant_isolation.sql, and now the vector tables too: they
-- read the spaces (the operator creates a job's space before its workers start: creating one also
-- creates its index, which only the owner may) and write their documents' vectors.
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
                              'text_search_config', 'current_run', 'created_at', 'deleted_at');
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

CREATE FUNCTION headrace.ensure_space_index(space integer) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    dims integer;
BEGIN
    SELECT dimensions INTO dims FROM headrace.embedding_spaces WHERE id = space;
    IF dims > 2000 THEN
        -- HNSW indexes vectors of up to 2,000 dimensions; halfvec up to 4,000.
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS embeddings_hnsw_%s ON headrace.embeddings '
            'USING hnsw ((embedding::halfvec(%s)) halfvec_cosine_ops) WHERE space_id = %s', space, dims, space);
    ELSE
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS embeddings_hnsw_%s ON headrace.embeddings '
            'USING hnsw ((embedding::vector(%s)) vector_cosine_ops) WHERE space_id = %s', space, dims, space);
    END IF;
END
$fn$;

SELECT headrace.ensure_vectors();
