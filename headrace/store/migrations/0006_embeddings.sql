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
    RETURN true;
END
$fn$;

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
