-- compatible-from: 2
-- Tenant isolation: one Postgres role per Kubernetes namespace, row-level security on every table a
-- worker touches, and namespaces identified by UID (docs/security.md).
--
-- Who is subject to what:
-- - the owner role (the installation's DATABASE_URL: migrations, the operator, the API) owns these
--   tables. RLS is ENABLEd, not FORCEd, so the owner keeps reading and writing everything;
-- - a tenant role (`<prefix>ns_<namespace uid>`, created by the operator, a member of the group role
--   that `headrace.grant_tenant_access` grants to) owns nothing, has no BYPASSRLS, and sees only the
--   rows of the namespace `headrace.tenants` maps it to. Any other role sees no row at all.
--
-- A new table that workers read or write needs its own policy below (in its own migration) and a grant
-- in `headrace.grant_tenant_access`, or tenant workers get "permission denied" for it.

-- The namespace's UID at registration: the identity authorization meets stored data by. NULL in local mode.
ALTER TABLE headrace.jobs ADD COLUMN namespace_uid uuid;
CREATE INDEX jobs_namespace_uid_name ON headrace.jobs (namespace_uid, name);

-- Which namespace each tenant role speaks for. Written only by the operator (owner).
CREATE TABLE headrace.tenants (
    role                name PRIMARY KEY,
    namespace           text NOT NULL,
    namespace_uid       uuid NOT NULL UNIQUE,
    created_at          timestamptz NOT NULL DEFAULT now(),
    rotated_at          timestamptz NOT NULL DEFAULT now()
);

-- The namespace UID the connected role speaks for; NULL for every role that is not a tenant's.
-- SECURITY DEFINER so tenant roles need no privilege on `tenants` (inside, current_user is the definer,
-- so the login role is session_user; a tenant can SET ROLE only to its group, which changes nothing);
-- a fixed search_path so nobody can shadow its names.
CREATE FUNCTION headrace.tenant_namespace_uid() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT namespace_uid FROM headrace.tenants WHERE role = session_user $$;
REVOKE ALL ON FUNCTION headrace.tenant_namespace_uid() FROM PUBLIC;

-- The uids of the jobs the connected tenant may touch (its namespace's), for the tables keyed by job_uid.
CREATE FUNCTION headrace.tenant_job_uids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(j.uid), '{}') FROM headrace.jobs j
    WHERE j.namespace_uid = (SELECT t.namespace_uid FROM headrace.tenants t WHERE t.role = session_user)
$$;
REVOKE ALL ON FUNCTION headrace.tenant_job_uids() FROM PUBLIC;

ALTER TABLE headrace.tenants ENABLE ROW LEVEL SECURITY;   -- no policy: tenants read nothing of it
ALTER TABLE headrace.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE headrace.runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE headrace.tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE headrace.documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE headrace.chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE headrace.job_events ENABLE ROW LEVEL SECURITY;

-- `(SELECT f())` is evaluated once per statement (an InitPlan), not once per row.
CREATE POLICY tenant_jobs ON headrace.jobs
    USING (namespace_uid = (SELECT headrace.tenant_namespace_uid()));
CREATE POLICY tenant_runs ON headrace.runs
    USING (job_uid = ANY ((SELECT headrace.tenant_job_uids())::uuid[]));
CREATE POLICY tenant_tasks ON headrace.tasks
    USING (job_uid = ANY ((SELECT headrace.tenant_job_uids())::uuid[]));
CREATE POLICY tenant_documents ON headrace.documents
    USING (job_uid = ANY ((SELECT headrace.tenant_job_uids())::uuid[]));
CREATE POLICY tenant_chunks ON headrace.chunks
    USING (job_uid = ANY ((SELECT headrace.tenant_job_uids())::uuid[]));
CREATE POLICY tenant_job_events ON headrace.job_events
    USING (job_uid = ANY ((SELECT headrace.tenant_job_uids())::uuid[]));

-- What a worker needs and nothing more. Notably: no INSERT or DELETE on jobs and no UPDATE of a job's
-- identity or spec, so a worker cannot rewrite a stored spec (its own included: the operator checked
-- it) nor move a job to another namespace. Updatable columns are those not listed here, read from the
-- catalog at each call (the operator calls it at every start), so columns that later migrations add
-- to jobs and runs for the worker's bookkeeping need no change here.
CREATE FUNCTION headrace.grant_tenant_access(grantee name) RETURNS void
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
    EXECUTE format('GRANT USAGE ON SEQUENCE headrace.tasks_id_seq, headrace.documents_id_seq, '
                   'headrace.chunks_id_seq, headrace.job_events_id_seq TO %I', grantee);
    EXECUTE format('GRANT EXECUTE ON FUNCTION headrace.tenant_namespace_uid(), headrace.tenant_job_uids() TO %I',
                   grantee);
END
$$;
REVOKE ALL ON FUNCTION headrace.grant_tenant_access(name) FROM PUBLIC;

-- Adoption (retained data of a deleted IngestionJob taken over by a new one of the same namespace and
-- name): every row keyed by the old uid moves to the new one, whatever table holds it, so tables added
-- later by other migrations move too. The jobs row is copied under the new uid, the rest re-pointed,
-- the old row removed.
CREATE FUNCTION headrace.move_job(old_uid uuid, new_uid uuid) RETURNS void
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
        ORDER BY c.table_name
    LOOP
        EXECUTE format('UPDATE headrace.%I SET job_uid = $2 WHERE job_uid = $1', keyed.table_name)
        USING old_uid, new_uid;
    END LOOP;
    DELETE FROM headrace.jobs WHERE uid = old_uid;
END
$$;
REVOKE ALL ON FUNCTION headrace.move_job(uuid, uuid) FROM PUBLIC;
