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

INSERT INTO lock_packages (lock_hash, platform, name, version, build)
SELECT locks.lock_hash, platforms.key,
       records.value ->> 'name',
       COALESCE(records.value ->> 'version', ''),
       COALESCE(records.value ->> 'build', '')
FROM locks
CROSS JOIN LATERAL json_each(
    CASE WHEN json_typeof(locks.packages::json) = 'object' THEN locks.packages::json ELSE '{}'::json END
) AS platforms
CROSS JOIN LATERAL json_array_elements(
    CASE WHEN json_typeof(platforms.value) = 'array' THEN platforms.value ELSE '[]'::json END
) AS records
WHERE json_typeof(records.value) = 'object' AND records.value ->> 'name' IS NOT NULL
ON CONFLICT DO NOTHING;
