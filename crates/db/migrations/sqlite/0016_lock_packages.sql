-- Which locks hold which packages: one row per lock, platform and package
-- record, so "which environments contain numpy" is an indexed lookup
-- instead of a read of every lock's JSON. Filled when a lock is stored;
-- the locks stored before are back-filled here from `locks.packages`
-- (`{"<platform>": [{"name": …, "version": …, "build": …}, …]}`).
CREATE TABLE lock_packages (
    lock_hash TEXT NOT NULL REFERENCES locks (lock_hash) ON DELETE CASCADE,
    platform TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    build TEXT NOT NULL,
    PRIMARY KEY (lock_hash, platform, name, version, build)
);
CREATE INDEX lock_packages_by_name ON lock_packages (name, lock_hash);

INSERT OR IGNORE INTO lock_packages (lock_hash, platform, name, version, build)
SELECT locks.lock_hash, platforms.key,
       json_extract(records.value, '$.name'),
       COALESCE(json_extract(records.value, '$.version'), ''),
       COALESCE(json_extract(records.value, '$.build'), '')
FROM locks,
     json_each(CASE WHEN json_valid(locks.packages)
                    THEN CASE WHEN json_type(locks.packages) = 'object' THEN locks.packages ELSE '{}' END
                    ELSE '{}' END) AS platforms,
     json_each(CASE WHEN platforms.type = 'array' THEN platforms.value ELSE '[]' END) AS records
WHERE records.type = 'object' AND json_extract(records.value, '$.name') IS NOT NULL;
