-- Who may do what: API tokens (stored as sha256), role bindings of subjects
-- to namespaces (exact names or globs such as team-*), public namespaces.
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    name TEXT NOT NULL,
    created_by TEXT NOT NULL,
    server_admin BIGINT NOT NULL DEFAULT 0,
    scopes TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);

CREATE INDEX tokens_by_subject ON tokens (subject);

CREATE TABLE role_bindings (
    subject TEXT NOT NULL,
    namespace_pattern TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (subject, namespace_pattern)
);

ALTER TABLE namespaces ADD COLUMN public_read BIGINT NOT NULL DEFAULT 0;
