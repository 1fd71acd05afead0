-- compatible-from: 2
-- A task of a superseded run is cancelled, not deleted: its worker finds its lease gone and stops.
ALTER TABLE headrace.tasks DROP CONSTRAINT tasks_state_check;
ALTER TABLE headrace.tasks ADD CONSTRAINT tasks_state_check
    CHECK (state IN ('pending', 'leased', 'done', 'dead', 'cancelled'));
-- Pruning old runs and deleting a job read its events by run.
CREATE INDEX job_events_run ON headrace.job_events (job_uid, run);
