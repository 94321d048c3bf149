-- Claims that took a job over from a worker whose lease ran out: how many
-- times the job's worker stopped (killed, crashed or out of contact), for
-- the message of a build that reaches its attempt limit that way.
ALTER TABLE jobs ADD COLUMN stopped BIGINT NOT NULL DEFAULT 0;

-- The log of a build's running attempt, written as it goes (the last MiB),
-- so an attempt whose worker dies leaves its log for the next one to
-- publish. One row per build; removed once the attempt's log is published.
CREATE TABLE attempt_logs (
    build_id TEXT PRIMARY KEY,
    attempt BIGINT NOT NULL,
    text TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
