-- One worker at a time builds the prefix of a lock: it holds a lease on the
-- lock hash, renewed while it builds; an expired lease may be taken over.
CREATE TABLE prefix_leases (
    lock_hash TEXT PRIMARY KEY,
    worker TEXT NOT NULL,
    locked_until BIGINT NOT NULL
);

-- The sha256 of the packed prefix published as prefixes/<lock_hash>.tar.zst,
-- checked by nodes that materialise it.
ALTER TABLE locks ADD COLUMN packed_prefix_sha256 TEXT;
