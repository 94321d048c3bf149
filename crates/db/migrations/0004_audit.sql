-- Who changed what, when: namespaces, submissions, tokens, roles, visibility.
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    subject TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);

CREATE INDEX audit_log_by_time ON audit_log (at, id);
