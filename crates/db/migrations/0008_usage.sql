-- Usage and quotas per namespace. A prefix is measured once, when a node
-- builds or materialises it (bytes of its regular files, each inode once).
-- Downloads are counted in memory by each API process and added here in
-- batches. No foreign keys to namespaces: garbage collection removes
-- namespace rows, and these must not stand in its way.
CREATE TABLE prefix_sizes (
    lock_hash TEXT PRIMARY KEY,
    bytes BIGINT NOT NULL,
    files BIGINT NOT NULL,
    measured_at BIGINT NOT NULL
);

-- GETs of an environment's lockfile, by namespace.
CREATE TABLE namespace_downloads (
    namespace TEXT PRIMARY KEY,
    downloads BIGINT NOT NULL
);

-- GETs of a lock's artifacts by hash: the URL names no namespace.
CREATE TABLE lock_downloads (
    lock_hash TEXT PRIMARY KEY,
    downloads BIGINT NOT NULL
);

-- Limits a server admin set for a namespace; NULL: the server's default.
CREATE TABLE namespace_quotas (
    namespace TEXT PRIMARY KEY,
    max_disk_bytes BIGINT,
    max_concurrent_builds BIGINT,
    updated_at BIGINT NOT NULL
);
