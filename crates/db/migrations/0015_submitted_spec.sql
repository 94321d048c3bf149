-- The spec text of a build as its submitter sent it (environment.yml or
-- JSON, byte for byte) and which of the two it is ('yaml' or 'json'), so it
-- can be downloaded and edited again. The canonical form in `specs` stays
-- what is hashed. Builds made before this migration, and builds installing
-- a lockfile, have none.
ALTER TABLE builds ADD COLUMN submitted_spec TEXT;
ALTER TABLE builds ADD COLUMN submitted_format TEXT;
