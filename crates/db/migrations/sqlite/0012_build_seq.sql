-- The order builds were accepted in, which decides which succeeded build
-- becomes current and how histories are ordered: a number from one counter,
-- never a millisecond time stamp (those tie, and differ between nodes).
-- SQLite has one writer at a time, so a one-row counter bumped in the
-- submitting transaction hands out each number once, in commit order.
ALTER TABLE builds ADD COLUMN seq BIGINT;
UPDATE builds SET seq = ordered.n
FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM builds) AS ordered
WHERE builds.id = ordered.id;
CREATE UNIQUE INDEX builds_by_seq ON builds (seq);
CREATE INDEX builds_by_environment_seq ON builds (namespace, environment, seq);

CREATE TABLE build_seq (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    last BIGINT NOT NULL
);
INSERT INTO build_seq (id, last) SELECT 1, COALESCE(MAX(seq), 0) FROM builds;
