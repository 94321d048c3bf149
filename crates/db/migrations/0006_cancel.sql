-- A running build asked to stop; its worker notices and cancels it.
ALTER TABLE builds ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;
