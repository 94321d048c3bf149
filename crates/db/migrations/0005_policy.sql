-- A namespace's policy (JSON), which tightens the server's.
ALTER TABLE namespaces ADD COLUMN policy TEXT;
