-- compatible-from: 2
--
-- Expand only: a nullable column, which code of every earlier version ignores.
--
-- Chunks are now embedded with their document's title (`headrace.model.spec.EMBEDDING_INPUT`,
-- 'title+chunk'); every earlier version embedded the chunk's text alone. `embedding_input` marks a
-- document whose vectors were computed from such an earlier input: set here on every document that
-- has vectors, NULL on those written from now on (their vectors come from the current input). A
-- marked document is re-embedded from its stored chunks at its job's next run, as one embedded in
-- another space is (nothing is fetched or extracted again), and its mark is cleared then.
-- A later change of EMBEDDING_INPUT marks the documents of the input it replaces the same way.
ALTER TABLE headrace.documents ADD COLUMN embedding_input text;
UPDATE headrace.documents SET embedding_input = 'chunk' WHERE embedding_space IS NOT NULL;
