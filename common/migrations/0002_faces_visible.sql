-- depends: 0001_roles
--
-- The operator sees faces (results pages, people pages, review of unknown faces).
--
-- faces.encoding: the face's 128-d encoding as the recognizer computed it (128 float32,
--   little-endian: 512 bytes), so a face can be enrolled from a result and an image matched
--   again without detecting anew. A person's erasure nulls it on the faces matched to them
--   (common/erasure.py): no encoding of an erased person is kept.
-- faces.seen_at: the image's submission time, copied so that "newest unknown faces" and "where
--   was this person seen" are index scans of faces alone.
ALTER TABLE faces ADD COLUMN IF NOT EXISTS encoding bytea;
ALTER TABLE faces ADD COLUMN IF NOT EXISTS seen_at timestamptz;
CREATE INDEX IF NOT EXISTS faces_unknown_idx ON faces (seen_at DESC NULLS LAST, image_id, face_index)
    WHERE person_id IS NULL AND encoding IS NOT NULL;
CREATE INDEX IF NOT EXISTS faces_person_seen_idx ON faces (person_id, seen_at DESC NULLS LAST, image_id)
    WHERE person_id IS NOT NULL;

-- Enrolled faces keep what they were enrolled from: the encoding and its model (a merge
-- re-enrolls it under the other person), a JPEG crop of the face (the person's page shows it), the photo's
-- SHA-256 (the same photo is not enrolled twice for one person) and, for a face named in
-- review, the result face it came from.
ALTER TABLE person_faces ADD COLUMN IF NOT EXISTS encoding bytea;
ALTER TABLE person_faces ADD COLUMN IF NOT EXISTS crop bytea;
ALTER TABLE person_faces ADD COLUMN IF NOT EXISTS model jsonb;
ALTER TABLE person_faces ADD COLUMN IF NOT EXISTS source_sha256 text;
ALTER TABLE person_faces ADD COLUMN IF NOT EXISTS source_image_id uuid;
ALTER TABLE person_faces ADD COLUMN IF NOT EXISTS source_face_index integer;
CREATE INDEX IF NOT EXISTS person_faces_photo_idx ON person_faces (person_id, source_sha256);

-- Thumbnails, face crops and display copies of stored images, made once on first request
-- and cached here (api/imaging.py). kind: 'thumb', 'preview' or 'face:<index>'; a row of an
-- older run is made again. They go with their image (ON DELETE CASCADE).
CREATE TABLE IF NOT EXISTS thumbnails (
    image_id   uuid    NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    kind       text    NOT NULL,
    run        integer NOT NULL,
    content    bytea   NOT NULL,
    PRIMARY KEY (image_id, kind)
);

-- The results list's filters, each an index that also gives the keyset order
-- (submitted_at DESC NULLS LAST, id): a page is an index range scan at any table size.
-- (A DESC index puts NULLs first: the list's NULLS LAST order could not use the old ones,
-- and sorted the whole table for every page.)
CREATE INDEX IF NOT EXISTS images_keyset_idx ON images (submitted_at DESC NULLS LAST, id);
CREATE INDEX IF NOT EXISTS images_status_keyset_idx ON images (status, submitted_at DESC NULLS LAST, id);
CREATE INDEX IF NOT EXISTS images_camera_keyset_idx ON images (camera, submitted_at DESC NULLS LAST, id);
DROP INDEX IF EXISTS images_submitted_idx;
DROP INDEX IF EXISTS images_status_idx;
-- Filename search is a case-insensitive substring: trigrams make it an index scan.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX IF NOT EXISTS images_filename_trgm_idx ON images USING gin (filename gin_trgm_ops);

GRANT SELECT, INSERT, UPDATE, DELETE ON thumbnails TO facestream_api;
GRANT UPDATE ON people TO facestream_api;
GRANT UPDATE, DELETE ON person_faces TO facestream_api;
