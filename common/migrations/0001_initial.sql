-- facestream's read model in PostgreSQL, as it stood when versioned migrations began
-- (it was common/schema.sql, applied by every service at start-up). Written by the
-- projector (stream/) and enrollment (people), read by the results API.
-- Applied once, by `python -m common.migrate` (yoyo-migrations): never edit an applied
-- migration, add the next file instead. IF NOT EXISTS stays so that a database created
-- by the old start-up DDL takes this migration as it is.

CREATE TABLE IF NOT EXISTS images (
    id              uuid PRIMARY KEY,
    run             integer     NOT NULL DEFAULT 0,
    status          text        NOT NULL CHECK (status IN ('pending', 'processed', 'unresolved', 'failed')),
    status_reason   text,                    -- unresolved: no_face | unknown_faces; failed: a FailureReason
    status_detail   text,
    filename        text,
    content_type    text,
    size_bytes      integer,
    sha256          text,
    source          text,
    camera          text,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    width           integer,
    height          integer,
    face_count      integer,
    attempts        integer     NOT NULL DEFAULT 0,
    gallery_version bigint,
    rule            jsonb,
    model           jsonb,
    timings_ms      jsonb,
    trace_id        text,
    submitted_at    timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS images_status_idx ON images (status, submitted_at DESC);
CREATE INDEX IF NOT EXISTS images_submitted_idx ON images (submitted_at DESC, id);

-- The submitted bytes, kept so that failed and unresolved images can be re-run.
CREATE TABLE IF NOT EXISTS image_blobs (
    image_id  uuid PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    content   bytea       NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS people (
    id         uuid PRIMARY KEY,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS person_faces (
    id          uuid PRIMARY KEY,
    person_id   uuid        NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    filename    text,
    box         jsonb,
    enrolled_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS person_faces_person_idx ON person_faces (person_id);

-- Faces found in images; (image_id, face_index) is the idempotency key: a redelivered
-- result rewrites the same rows.
CREATE TABLE IF NOT EXISTS faces (
    image_id        uuid    NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    face_index      integer NOT NULL,
    run             integer NOT NULL,
    box_top         integer NOT NULL,
    box_right       integer NOT NULL,
    box_bottom      integer NOT NULL,
    box_left        integer NOT NULL,
    person_id       uuid,   -- no FK: a result may name a person the projector has not seen yet
    person_name     text,
    distance        real,
    second_distance real,
    PRIMARY KEY (image_id, face_index)
);
CREATE INDEX IF NOT EXISTS faces_person_idx ON faces (person_id) WHERE person_id IS NOT NULL;

-- Images erased on request: the projector ignores any later event about them.
CREATE TABLE IF NOT EXISTS erased_images (
    id        uuid PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now()
);

-- People erased on request: results naming them are stored anonymised.
CREATE TABLE IF NOT EXISTS erased_people (
    id        uuid PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now()
);

-- API keys (common/auth.py): only the SHA-256 of each key is stored.
CREATE TABLE IF NOT EXISTS api_keys (
    id              text PRIMARY KEY,           -- the public part of fsk_<id>_<secret>
    name            text        NOT NULL,
    scopes          text[]      NOT NULL,
    key_sha256      text        NOT NULL UNIQUE,
    rate_per_minute integer,                    -- NULL: the service default
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

-- Retries waiting for their due time (stream/retries.py). A waiting retry holds up
-- nothing else: the stream worker sends each to the recognizers once it is due.
-- (image_id, run, attempt) keys it, so a redelivered failure schedules nothing twice.
CREATE TABLE IF NOT EXISTS retries (
    image_id     uuid        NOT NULL,
    run          integer     NOT NULL,
    attempt      integer     NOT NULL,
    due_at       timestamptz NOT NULL,
    request      bytea       NOT NULL,   -- the RecognitionRequested event, as published
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (image_id, run, attempt)
);
CREATE INDEX IF NOT EXISTS retries_due_idx ON retries (due_at);

-- Where the image's submission lies on images.submitted, and the reconciler's record
-- (stream/reconciler.py): an image pending for too long is sent to the recognizers again.
ALTER TABLE images ADD COLUMN IF NOT EXISTS kafka_partition integer;
ALTER TABLE images ADD COLUMN IF NOT EXISTS kafka_offset bigint;
ALTER TABLE images ADD COLUMN IF NOT EXISTS redispatched_at timestamptz;
ALTER TABLE images ADD COLUMN IF NOT EXISTS redispatches integer NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS images_pending_idx ON images (updated_at) WHERE status = 'pending';

-- Total erasure of gallery keys (stream/gallery_purge.py). gallery_faces lists every
-- face key the projector has read on the gallery topic and not yet seen deleted: unlike
-- person_faces it survives a person's erasure in the read model, so the projector can
-- still tombstone a face whose erasure raced its enrollment. gallery_purge is an outbox
-- of gallery keys to tombstone (a face or person enrolled after, or during, an erasure).
CREATE TABLE IF NOT EXISTS gallery_faces (
    face_id   uuid PRIMARY KEY,
    person_id uuid NOT NULL
);
CREATE INDEX IF NOT EXISTS gallery_faces_person_idx ON gallery_faces (person_id);
INSERT INTO gallery_faces (face_id, person_id) SELECT id, person_id FROM person_faces ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS gallery_purge (
    key       text PRIMARY KEY,
    queued_at timestamptz NOT NULL DEFAULT now()
);
