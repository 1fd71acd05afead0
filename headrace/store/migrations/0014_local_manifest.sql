-- compatible-from: 2
--
-- Expand only: a nullable column, which code of every earlier version ignores (its inserts name their
-- columns and leave this one NULL).
--
-- The manifest file a local job (`headrace run -f FILE`) was last run from, as an absolute path; NULL
-- for a cluster's IngestionJobs and for local jobs run before this migration. Local jobs are keyed by
-- namespace and name, so two manifest files that name the same job would otherwise merge into one
-- index: `headrace run` refuses the second file while the first still names that job.
ALTER TABLE headrace.jobs ADD COLUMN IF NOT EXISTS manifest text;
