-- The first schema: namespaces, environments, specs, locks, builds and the job queue.
-- Times are milliseconds since the Unix epoch; JSON columns are TEXT.
CREATE TABLE namespaces (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE specs (
    spec_hash TEXT PRIMARY KEY,
    canonical TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE locks (
    lock_hash TEXT PRIMARY KEY,
    platforms TEXT NOT NULL,
    packages TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE environments (
    namespace TEXT NOT NULL REFERENCES namespaces (name),
    name TEXT NOT NULL,
    current_build_id TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (namespace, name)
);

CREATE TABLE builds (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    environment TEXT NOT NULL,
    spec_hash TEXT NOT NULL REFERENCES specs (spec_hash),
    status TEXT NOT NULL,
    lock_hash TEXT REFERENCES locks (lock_hash),
    lock_reused BIGINT NOT NULL DEFAULT 0,
    prefix_reused BIGINT NOT NULL DEFAULT 0,
    phases TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    FOREIGN KEY (namespace, environment) REFERENCES environments (namespace, name)
);

CREATE INDEX builds_by_environment ON builds (namespace, environment, created_at);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    build_id TEXT NOT NULL REFERENCES builds (id),
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    run_after BIGINT NOT NULL,
    locked_until BIGINT,
    worker TEXT,
    last_error TEXT,
    created_at BIGINT NOT NULL
);

CREATE INDEX jobs_ready ON jobs (state, run_after);
