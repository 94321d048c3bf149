-- Tokens minted with a token remember it: revoking a token revokes what it
-- minted, and a token whose ancestor is revoked or expired is refused.
ALTER TABLE tokens ADD COLUMN parent_token_id TEXT;
CREATE INDEX tokens_by_parent ON tokens (parent_token_id);
