-- compatible-from: 2
--
-- Expand only, data alone: how a superseded run ended, in the column that says how every run ended.
--
-- A run left unfinished when a newer run of its job starts is closed by `jobs.start_run`. It used to
-- get only `error = 'superseded by run N'`, so the API called it RunFailed and the metrics found it by
-- matching that text. It now gets `end_reason = 'RunSuperseded'` (headrace/model/events.py), and the
-- runs closed that way before are given it here. Code of every earlier version reads `end_reason` as
-- it finds it and still writes `error` the same way, so it keeps working on this schema.
UPDATE headrace.runs SET end_reason = 'RunSuperseded'
WHERE end_reason IS NULL AND finished_at IS NOT NULL AND error LIKE 'superseded by run %';
