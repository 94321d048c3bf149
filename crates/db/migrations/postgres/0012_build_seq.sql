-- The order builds were accepted in, which decides which succeeded build
-- becomes current and how histories are ordered: a number from one
-- sequence, never a millisecond time stamp (those tie, and differ between
-- nodes). Numbers are taken when a build is inserted; the column's default.
ALTER TABLE builds ADD COLUMN seq BIGINT;
UPDATE builds SET seq = ordered.n
FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM builds) AS ordered
WHERE builds.id = ordered.id;
CREATE UNIQUE INDEX builds_by_seq ON builds (seq);
CREATE INDEX builds_by_environment_seq ON builds (namespace, environment, seq);

CREATE SEQUENCE builds_seq OWNED BY builds.seq;
SELECT setval('builds_seq', COALESCE((SELECT MAX(seq) FROM builds), 0) + 1, false);
ALTER TABLE builds ALTER COLUMN seq SET DEFAULT nextval('builds_seq');
ALTER TABLE builds ALTER COLUMN seq SET NOT NULL;
