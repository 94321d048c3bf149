-- An environment's life: deletion is soft first (hidden at once, cleaned by
-- garbage collection later); old builds lose their prefix when collected but
-- keep their lock and log; activation variables travel with the lock.
ALTER TABLE namespaces ADD COLUMN deleted_at BIGINT;
ALTER TABLE environments ADD COLUMN deleted_at BIGINT;
ALTER TABLE builds ADD COLUMN deleted_at BIGINT;
ALTER TABLE builds ADD COLUMN prefix_collected_at BIGINT;
ALTER TABLE locks ADD COLUMN variables TEXT;
