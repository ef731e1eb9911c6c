-- depends: 0003_webhooks
--
-- API keys may expire, and show when they were last used.
--
-- api_keys.expires_at: NULL never; past it the key is refused (401 "expired"), like a
--   revoked one, but listed as expired rather than revoked.
-- api_key_use: when each key was last used, written by the services that check keys
--   (ingest, api) at most once a minute per key and process (common/auth.py). A table
--   of its own, so that ingest, which may only read api_keys, never gets to write a
--   key's scopes or revocation.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS expires_at timestamptz;

CREATE TABLE IF NOT EXISTS api_key_use (
    key_id       text PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    last_used_at timestamptz NOT NULL
);

-- The upsert (INSERT ... ON CONFLICT DO UPDATE) reads the row it updates: SELECT too.
GRANT SELECT, INSERT, UPDATE ON api_key_use TO facestream_ingest, facestream_api;
