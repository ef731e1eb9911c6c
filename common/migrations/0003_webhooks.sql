-- depends: 0002_faces_visible
--
-- Signed webhooks (notify/, api/routes/webhooks.py).
--
-- webhooks: what the API manages (admin scope). secret: the HMAC key the deliveries are
--   signed with; shown once, when the webhook is created, and never answered again, but
--   kept, since signing needs the key itself. events, cameras, people: the filters (empty
--   cameras or people: any). A deleted webhook's pending deliveries go with it.
-- webhook_deliveries: one row per (webhook, event) to send, written by notify from the
--   results topic before it commits the offset (at least once). id = uuid5 of (webhook,
--   image, run, event, face index), so a redelivered result writes nothing new; body: the
--   exact bytes sent on every attempt (the signature covers them). state pending ->
--   delivered | failed; next_attempt_at: when the next attempt is due (also a lease while
--   one is in flight, so that two notify replicas do not send one attempt twice).
CREATE TABLE IF NOT EXISTS webhooks (
    id         uuid PRIMARY KEY,
    url        text        NOT NULL,
    events     text[]      NOT NULL,
    cameras    text[]      NOT NULL DEFAULT '{}',
    people     uuid[]      NOT NULL DEFAULT '{}',
    secret     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              uuid PRIMARY KEY,
    webhook_id      uuid        NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event           text        NOT NULL,
    image_id        uuid        NOT NULL,
    run             integer     NOT NULL,
    face_index      integer,
    body            bytea       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    finished_at     timestamptz
);
-- The sender's scan: due pending deliveries, oldest due first.
CREATE INDEX IF NOT EXISTS webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
-- A webhook's deliveries, newest first (GET /v1/webhooks/{id}/deliveries).
CREATE INDEX IF NOT EXISTS webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, created_at DESC, id);

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'facestream_notify') THEN
        CREATE ROLE facestream_notify NOLOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO facestream_notify', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO facestream_notify', current_schema());
END
$$;

GRANT SELECT ON _yoyo_migration TO facestream_notify;
-- The API manages webhooks and reads their deliveries.
GRANT SELECT, INSERT, DELETE ON webhooks TO facestream_api;
GRANT SELECT ON webhook_deliveries TO facestream_api;
-- notify reads the webhooks, the camera of each image, the names of people (and who was
-- erased: never named), and owns
-- the deliveries (SELECT ... FOR UPDATE needs UPDATE).
GRANT SELECT ON webhooks TO facestream_notify;
GRANT SELECT (id, camera) ON images TO facestream_notify;
GRANT SELECT (id, name) ON people TO facestream_notify;
GRANT SELECT ON erased_people TO facestream_notify;
GRANT SELECT, INSERT, UPDATE ON webhook_deliveries TO facestream_notify;
