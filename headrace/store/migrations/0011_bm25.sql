-- compatible-from: 2
--
-- Expand only: a column with a default and the triggers that keep it, and a text-search config, which
-- code of every earlier version ignores (its writes of chunks keep the column right through the
-- triggers; it never names the new config).
--
-- BM25 divides a chunk's length by the average length of the collection. The collection statistics
-- (headrace/store/bm25.py) are N, the number of chunks of the searched jobs, and their total length,
-- both summed over the jobs' documents, one row each: `chunk_count` already, and now `lexemes`, the
-- sum of its chunks' lengths (distinct lexemes, `length(tsv)`). So search ranks by the job's average
-- length before its search statistics are built as after, without reading every chunk per query.
ALTER TABLE headrace.documents ADD COLUMN IF NOT EXISTS lexemes bigint NOT NULL DEFAULT 0;

-- Kept by the chunks' own writes, statement by statement (one UPDATE per statement, of the documents
-- the statement touched, which their writers hold locked already).
CREATE OR REPLACE FUNCTION headrace.count_chunk_lexemes() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE headrace.documents d SET lexemes = d.lexemes + s.total
        FROM (SELECT document_id, sum(length(tsv)) AS total FROM added GROUP BY document_id) s
        WHERE d.id = s.document_id;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE headrace.documents d SET lexemes = greatest(d.lexemes - s.total, 0)
        FROM (SELECT document_id, sum(length(tsv)) AS total FROM removed GROUP BY document_id) s
        WHERE d.id = s.document_id;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS chunks_lexemes_insert ON headrace.chunks;
DROP TRIGGER IF EXISTS chunks_lexemes_delete ON headrace.chunks;
DROP TRIGGER IF EXISTS chunks_lexemes_update ON headrace.chunks;
CREATE TRIGGER chunks_lexemes_insert AFTER INSERT ON headrace.chunks
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION headrace.count_chunk_lexemes();
CREATE TRIGGER chunks_lexemes_delete AFTER DELETE ON headrace.chunks
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION headrace.count_chunk_lexemes();
CREATE TRIGGER chunks_lexemes_update AFTER UPDATE ON headrace.chunks
    REFERENCING OLD TABLE AS removed NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION headrace.count_chunk_lexemes();

-- The documents stored before: one pass over their chunks.
UPDATE headrace.documents d SET lexemes = s.total
FROM (SELECT document_id, sum(length(tsv)) AS total FROM headrace.chunks GROUP BY document_id) s
WHERE d.id = s.document_id AND d.lexemes <> s.total;

-- `english_unstemmed`: English stop words, every other word as written (lower-cased), not stemmed.
-- The default text-search config of new jobs (spec.textSearchConfig): on our evaluation sets'
-- development halves it ranks known items and questions better than `english`, whose stemmer
-- conflates words that documentation keeps apart (`files` and `file`, `working` and `work`:
-- docs/benchmarks.md). Jobs keep the config they were created with; theirs is `english` unless set.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_ts_dict WHERE dictname = 'english_words'
                   AND dictnamespace = 'headrace'::regnamespace) THEN
        CREATE TEXT SEARCH DICTIONARY headrace.english_words (TEMPLATE = pg_catalog.simple, STOPWORDS = english);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_ts_config WHERE cfgname = 'english_unstemmed'
                   AND cfgnamespace = 'headrace'::regnamespace) THEN
        CREATE TEXT SEARCH CONFIGURATION headrace.english_unstemmed (COPY = pg_catalog.english);
        ALTER TEXT SEARCH CONFIGURATION headrace.english_unstemmed
            ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part
            WITH headrace.english_words;
    END IF;
END
$$;
