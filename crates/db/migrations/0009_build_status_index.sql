-- /metrics counts builds by status at every scrape, and quotas count a
-- namespace's queued and running builds at every submission.
CREATE INDEX builds_by_status ON builds (status, namespace);
