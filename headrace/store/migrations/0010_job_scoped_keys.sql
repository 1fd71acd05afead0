-- compatible-from: 2
--
-- Job-scoped keys: a chunk belongs to a document of its own job, and a vector to a chunk of its own job.
--
-- Until now `chunks.document_id` referenced `documents (id)` alone, and `embeddings.chunk_id`
-- `chunks (id)` alone. Foreign-key checks ignore row-level security, so a role that may insert
-- chunks for its own job could point one at any other job's document (another namespace's too),
-- and every read that joined chunk to document by id alone then served that document's URI, title
-- and neighbouring chunks as the writer's (docs/security.md, "Tenant isolation"). The keys now
-- carry the job: `(document_id, job_uid)` references `documents (id, job_uid)`, and
-- `(chunk_id, job_uid)` references `chunks (id, job_uid)`. The single-column keys go, so a refused
-- insert reads the same whether the id exists in another job or nowhere.
--
-- Compatible with every earlier version: no code of ours writes a chunk or a vector under a job
-- other than its document's. Adoption (`headrace.move_job`) re-points a job's rows; the keys
-- cascade on update, and documents move first, so their chunks and vectors follow.
--
-- On a populated database: rows that already break the rule are deleted (they can only be forged,
-- and moving them into the document's job would hand the forger's text to that job's search); the
-- two unique indexes are built and the keys validated with writes to documents, chunks and
-- embeddings blocked and reads served; the old keys are dropped last, which takes the tables'
-- exclusive lock only for the commit. Each step checks the catalog first, so a rerun changes nothing.

DELETE FROM headrace.chunks c USING headrace.documents d WHERE d.id = c.document_id AND d.job_uid <> c.job_uid;

CREATE UNIQUE INDEX IF NOT EXISTS documents_id_job ON headrace.documents (id, job_uid);
CREATE UNIQUE INDEX IF NOT EXISTS chunks_id_job ON headrace.chunks (id, job_uid);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chunks_document_job_fkey'
                   AND conrelid = 'headrace.chunks'::regclass) THEN
        ALTER TABLE headrace.chunks ADD CONSTRAINT chunks_document_job_fkey FOREIGN KEY (document_id, job_uid)
            REFERENCES headrace.documents (id, job_uid) ON DELETE CASCADE ON UPDATE CASCADE;
    END IF;
END
$$;

-- The vectors table exists only where pgvector does, possibly created later by an admin's
-- CREATE EXTENSION: `ensure_vectors` (every migrate calls it) creates it with the job-scoped key,
-- and gives one created by an earlier version the key, as this migration's steps above do for chunks.
CREATE OR REPLACE FUNCTION headrace.ensure_vectors() RETURNS boolean LANGUAGE plpgsql AS $fn$
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
        chunk_id            bigint PRIMARY KEY,
        job_uid             uuid NOT NULL,
        space_id            integer NOT NULL REFERENCES headrace.embedding_spaces (id),
        embedding           vector NOT NULL,
        CONSTRAINT embeddings_chunk_job_fkey FOREIGN KEY (chunk_id, job_uid)
            REFERENCES headrace.chunks (id, job_uid) ON DELETE CASCADE ON UPDATE CASCADE
    );
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'embeddings_chunk_job_fkey'
                   AND conrelid = 'headrace.embeddings'::regclass) THEN
        -- Created by 0006_embeddings.sql, keyed by chunk alone (0010_job_scoped_keys.sql says why).
        DELETE FROM headrace.embeddings e USING headrace.chunks c WHERE c.id = e.chunk_id AND c.job_uid <> e.job_uid;
        ALTER TABLE headrace.embeddings ADD CONSTRAINT embeddings_chunk_job_fkey FOREIGN KEY (chunk_id, job_uid)
            REFERENCES headrace.chunks (id, job_uid) ON DELETE CASCADE ON UPDATE CASCADE;
        ALTER TABLE headrace.embeddings DROP CONSTRAINT IF EXISTS embeddings_chunk_id_fkey;
    END IF;
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

SELECT headrace.ensure_vectors();

-- Adoption as in 0005_tenant_isolation.sql, with documents moved first: their chunks, and the chunks'
-- vectors, follow by the keys' ON UPDATE CASCADE (a chunk moved before its document would break its key).
CREATE OR REPLACE FUNCTION headrace.move_job(old_uid uuid, new_uid uuid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keyed record;
BEGIN
    INSERT INTO headrace.jobs
    SELECT (jsonb_populate_record(NULL::headrace.jobs, to_jsonb(j) || jsonb_build_object('uid', new_uid))).*
    FROM headrace.jobs j WHERE j.uid = old_uid;
    FOR keyed IN
        SELECT c.table_name FROM information_schema.columns c
        JOIN information_schema.tables t USING (table_schema, table_name)
        WHERE c.table_schema = 'headrace' AND c.column_name = 'job_uid' AND t.table_type = 'BASE TABLE'
        ORDER BY array_position(ARRAY['documents', 'chunks', 'embeddings']::text[], c.table_name::text) NULLS LAST,
                 c.table_name
    LOOP
        EXECUTE format('UPDATE headrace.%I SET job_uid = $2 WHERE job_uid = $1', keyed.table_name)
        USING old_uid, new_uid;
    END LOOP;
    DELETE FROM headrace.jobs WHERE uid = old_uid;
END
$$;
REVOKE ALL ON FUNCTION headrace.move_job(uuid, uuid) FROM PUBLIC;

ALTER TABLE headrace.chunks DROP CONSTRAINT IF EXISTS chunks_document_id_fkey;

-- Also, for the same tenant roles: a finished run stays finished. Rotation of a namespace's password
-- waits until none of its runs is unfinished (headrace/store/tenants.py), so a role that may update
-- its runs' bookkeeping could hold its own rotation off for ever by setting `finished_at` back to
-- NULL. No code of any version changes `finished_at` once set (every UPDATE of it is guarded by
-- `finished_at IS NULL`), so the trigger binds every role, the owner included.
CREATE OR REPLACE FUNCTION headrace.keep_runs_finished() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.finished_at IS NOT NULL AND NEW.finished_at IS DISTINCT FROM OLD.finished_at THEN
        RAISE EXCEPTION 'run % of job % finished at %: a finished run stays finished', OLD.run, OLD.job_uid,
            OLD.finished_at USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS runs_stay_finished ON headrace.runs;
CREATE TRIGGER runs_stay_finished BEFORE UPDATE OF finished_at ON headrace.runs
    FOR EACH ROW EXECUTE FUNCTION headrace.keep_runs_finished();
