-- Who submitted a build, kept with it. Builds made before this read it back
-- from the audit log's first `environment.submit` entry naming them.
ALTER TABLE builds ADD COLUMN submitted_by TEXT;
UPDATE builds SET submitted_by = (
    SELECT audit_log.subject FROM audit_log
    WHERE audit_log.action = 'environment.submit'
    AND audit_log.target = (builds.namespace || '/' || builds.environment)
    AND audit_log.detail LIKE ('%"build_id":"' || builds.id || '"%')
    ORDER BY audit_log.at, audit_log.id LIMIT 1
);
