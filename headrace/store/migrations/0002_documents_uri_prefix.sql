-- An archive's entries are found by URI prefix (`a.zip!/%`). A pattern-ops index lets that LIKE
-- read only the archive's own rows instead of every document of the job, whatever the collation.
CREATE INDEX documents_uri_prefix ON headrace.documents (job_uid, uri text_pattern_ops);
