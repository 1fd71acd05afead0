-- compatible-from: 2
--
-- Expand only: a nullable column, which code of every earlier version ignores (its inserts name their
-- columns and leave this one NULL, which reads as "no heading known").
--
-- A chunk's heading path: the headings it stands under in its document, outermost first, joined with
-- " › " ("Installation › Configuration › Proxies"; headrace/worker/outline.py). NULL when the chunk
-- stands under no heading, and for every chunk written before this migration until its document is
-- ingested again. Search returns it with every hit so a RAG app can cite where a passage comes from.
ALTER TABLE headrace.chunks ADD COLUMN IF NOT EXISTS heading_path text;
