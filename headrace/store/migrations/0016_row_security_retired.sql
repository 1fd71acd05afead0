-- compatible-from: 2
-- Row-level security retired: no tenant role logs in any more.
--
-- Migrations 0005, 0006, 0008 and 0010 gave each namespace's workers a Postgres role under row-level
-- security. Since the ingest service (issue 21) workers hold no database credential: the operator, the
-- API and the ingest service connect as the owner, whom RLS (ENABLEd, never FORCEd) never bound. What
-- the roles needed goes here: the policies, RLS on every table, the lookup functions
-- `tenant_namespace_uid()` and `tenant_job_uids()`, `grant_tenant_access(name)`, and the vectors
-- table's policy in `ensure_vectors()`. Isolation between namespaces is the services' (docs/security.md).
--
-- What stays, for the upgrade from a release that made such roles (headrace/store/legacy_roles.py):
-- `headrace.tenants` (role, namespace, namespace_uid), which tells the operator which roles to drop and
-- in which namespaces a worker Secret may remain; its rotation bookkeeping goes.
--
-- Those roles lose every privilege on the schema here, before their policies go: a session a worker of
-- that release still holds never sees more than its namespace, between this migration and the new
-- operator's start that drops the roles (which the owner may be unable to do: this needs no CREATEROLE).
--
-- Compatible with the last release (schema 2), which never made such roles. The unreleased code that
-- did (schemas 5 to 14, `database.tenantCredentials: roles`) is what this retires: its workers are
-- refused here, as the operator of issue 21 refuses them at start, and its operator, started on this
-- schema, fails to grant a role. Going back to that code means the backup taken before this migration.

DO $$
DECLARE
    tenant name;
BEGIN
    FOR tenant IN
        SELECT r.rolname FROM headrace.tenants t JOIN pg_roles r ON r.rolname = t.role
        UNION
        SELECT g.rolname FROM headrace.tenants t JOIN pg_roles r ON r.rolname = t.role
        JOIN pg_auth_members m ON m.member = r.oid JOIN pg_roles g ON g.oid = m.roleid
        UNION
        -- A group role with no member left: only `grant_tenant_access` granted the lookup function.
        SELECT g.rolname FROM pg_proc p, aclexplode(p.proacl) a JOIN pg_roles g ON g.oid = a.grantee
        WHERE p.oid = to_regprocedure('headrace.tenant_job_uids()') AND a.grantee <> p.proowner
    LOOP
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA headrace FROM %I', tenant);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA headrace FROM %I', tenant);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA headrace FROM %I', tenant);
        EXECUTE format('REVOKE ALL ON SCHEMA headrace FROM %I', tenant);
    END LOOP;
END
$$;

DO $$
DECLARE
    found record;
BEGIN
    FOR found IN SELECT tablename, policyname FROM pg_policies WHERE schemaname = 'headrace' LOOP
        EXECUTE format('DROP POLICY %I ON headrace.%I', found.policyname, found.tablename);
    END LOOP;
    FOR found IN
        SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'headrace'::regnamespace AND c.relrowsecurity
    LOOP
        EXECUTE format('ALTER TABLE headrace.%I DISABLE ROW LEVEL SECURITY', found.relname);
    END LOOP;
END
$$;

DROP FUNCTION headrace.grant_tenant_access(name);
DROP FUNCTION headrace.tenant_job_uids();
DROP FUNCTION headrace.tenant_namespace_uid();

ALTER TABLE headrace.tenants DROP COLUMN created_at, DROP COLUMN rotated_at;
COMMENT ON TABLE headrace.tenants IS
    'Database roles an earlier release made for a namespace''s workers, kept until the operator has dropped '
    'the role and deleted the namespace''s worker Secret (headrace/store/legacy_roles.py). Nothing adds rows.';

-- The vectors table, created whenever pgvector is there (at a migration, or after an admin's later
-- CREATE EXTENSION), as in 0010_job_scoped_keys.sql but with no policy and no grant: only the owner
-- touches it. A table made by 0006 was given its job-scoped key by 0010's call, so that step is gone.
CREATE OR REPLACE FUNCTION headrace.ensure_vectors() RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN
        RETURN false;
    END IF;
    -- One table for every space, keyed by chunk; job_uid is here so per-job deletes need no join. Each
    -- space gets its own partial HNSW index over the vectors cast to its dimension (see
    -- headrace.ensure_space_index), since an index needs one dimension.
    CREATE TABLE IF NOT EXISTS headrace.embeddings (
        chunk_id            bigint PRIMARY KEY,
        job_uid             uuid NOT NULL,
        space_id            integer NOT NULL REFERENCES headrace.embedding_spaces (id),
        embedding           vector NOT NULL,
        CONSTRAINT embeddings_chunk_job_fkey FOREIGN KEY (chunk_id, job_uid)
            REFERENCES headrace.chunks (id, job_uid) ON DELETE CASCADE ON UPDATE CASCADE
    );
    CREATE INDEX IF NOT EXISTS embeddings_job ON headrace.embeddings (job_uid, space_id);
    RETURN true;
END
$fn$;
