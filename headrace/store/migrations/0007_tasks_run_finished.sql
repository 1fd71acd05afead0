-- compatible-from: 2
--
-- Expand only: an index, which code of every earlier version ignores.
--
-- The metrics snapshot asks, every few seconds, when each active run last finished a task
-- (`headrace_run_last_progress_timestamp_seconds`, the "run stuck" alert). With this index that is one
-- index probe per run instead of a read of every task of the run.
CREATE INDEX IF NOT EXISTS tasks_run_finished ON headrace.tasks (job_uid, run, finished_at);
