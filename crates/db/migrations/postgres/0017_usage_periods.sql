-- Usage over a period. Downloads are also counted per UTC day (`day`: days
-- since 1970-01-01), beside the all-time counters, which keep counting:
-- a period's downloads are the days it touches. Downloads counted before
-- this migration have no day; `usage_history.counted_since` (when it ran)
-- says from when a period's downloads are complete. No foreign keys, as in
-- 0008: garbage collection removes namespace rows.
CREATE TABLE namespace_download_days (
    namespace TEXT NOT NULL,
    day BIGINT NOT NULL,
    downloads BIGINT NOT NULL,
    PRIMARY KEY (namespace, day)
);
CREATE INDEX namespace_download_days_by_day ON namespace_download_days (day);

CREATE TABLE lock_download_days (
    lock_hash TEXT NOT NULL,
    day BIGINT NOT NULL,
    downloads BIGINT NOT NULL,
    PRIMARY KEY (lock_hash, day)
);
CREATE INDEX lock_download_days_by_day ON lock_download_days (day);

-- A build holds its prefix from its end (`finished_at`) until it is
-- collected or deleted, which the builds table records. When garbage
-- collection removes a deleted build's row, its hold is copied here first,
-- so the disk it held stays in past periods. Builds removed before this
-- migration are gone: their disk is missing from periods before it.
CREATE TABLE released_prefix_holds (
    build_id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    lock_hash TEXT NOT NULL,
    held_from BIGINT NOT NULL,
    held_until BIGINT NOT NULL
);
CREATE INDEX released_prefix_holds_by_time ON released_prefix_holds (held_from, held_until);

-- Since when downloads are counted per day (milliseconds since the epoch).
CREATE TABLE usage_history (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    counted_since BIGINT NOT NULL
);
INSERT INTO usage_history (id, counted_since)
VALUES (1, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT));
