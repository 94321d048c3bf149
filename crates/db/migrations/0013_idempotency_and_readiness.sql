-- Answers to submissions sent with an `Idempotency-Key`, per caller, so a
-- client that lost the answer and sends the request again gets the same
-- build instead of a second one. Written in the transaction that queues the
-- build; kept 24 hours (older rows are ignored and replaced).
CREATE TABLE idempotency_keys (
    caller TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT,
    body TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (caller, idempotency_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- One row every node's readiness probe writes (and commits): a database that
-- answers reads but cannot take a write (disk full, read-only standby, a
-- locked file) is not ready.
CREATE TABLE readiness_probe (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    checked_at BIGINT NOT NULL
);
