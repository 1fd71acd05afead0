-- compatible-from: 2
-- How a run ended and what asked for it; a spec the operator refused.
--
-- A run's end has one owner: its row here. `finished_at` says when, `error` says why it failed
-- (NULL when it succeeded), and `end_reason` gives that cause as a CamelCase word
-- (RunSucceeded, RunFailed, BackoffLimitExceeded, DeadlineExceeded, ...). The operator's status, the
-- API and its event stream all read these columns; none of them keeps a phase of its own.
ALTER TABLE headrace.runs ADD COLUMN end_reason text;

-- The annotation value (`run:<value>` or `retry:<value>`) a run was started for, so an operator that
-- restarts after starting the run but before writing status does not start it twice.
ALTER TABLE headrace.runs ADD COLUMN request text;
CREATE UNIQUE INDEX runs_request ON headrace.runs (job_uid, request) WHERE request IS NOT NULL;

-- A retry run re-processes only the documents that failed in run `retry_of`: it lists nothing, so a
-- `sync: mirror` job must not delete what it did not touch.
ALTER TABLE headrace.runs ADD COLUMN retry_of integer;

-- Why the operator refused the IngestionJob's spec (NULL when it is valid), so the API can say so.
ALTER TABLE headrace.jobs ADD COLUMN spec_error text;

-- The job's own phase column was a second owner of the same fact, written by the workers and never
-- by the operator: the phase is now derived from the current run's row wherever it is shown.
ALTER TABLE headrace.jobs DROP COLUMN phase;
