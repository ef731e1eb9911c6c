-- depends: 0001_initial
--
-- One PostgreSQL role per service, each with the least it needs (the recognizer has no
-- database). They are NOLOGIN group roles: a deployment gives each service a login user
-- of its own that is a member of its group role (python -m common.migrate creates them
-- from INGEST_DATABASE_URL, API_DATABASE_URL, STREAM_DATABASE_URL; see its docstring).
-- The schema's owner (who runs the migrations) needs CREATEROLE, or the roles made
-- beforehand by an administrator: they are only created when missing.
--
-- The grants follow the SQL each service runs:
--   ingest  reads api_keys (the door) and erased_images, inserts pending images rows
--           (ingest/pending.py: INSERT ... ON CONFLICT DO NOTHING needs no UPDATE); it can
--           neither write api_keys nor read any result;
--   api     queries the read model (api/queries.py), enrolls (people, person_faces),
--           manages keys (api_keys), erases (common/erasure.py: images, faces, people,
--           erased_*, retries; the rows that reference an image or a person go with it by
--           ON DELETE CASCADE, which PostgreSQL runs with the owner's rights);
--   stream  is the read model's writer (stream/projector.py, retries.py, reconciler.py,
--           gallery_purge.py, common/erasure.py): every row operation on every read model
--           table, never api_keys. (SELECT ... FOR UPDATE needs UPDATE, DELETE ... WHERE
--           needs SELECT: hence the pairs below.)
-- Advisory locks (pg_advisory_xact_lock and friends) are PUBLIC functions: nothing to grant.
--
-- Tables added by later migrations are granted there, table by table, to the roles that
-- use them (no ALTER DEFAULT PRIVILEGES: a default would hand every new table to every
-- role, the opposite of least privilege). Such a migration names `-- depends: 0001_roles`.

DO $$
DECLARE
    role text;
BEGIN
    FOREACH role IN ARRAY ARRAY['facestream_ingest', 'facestream_api', 'facestream_stream'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role);
        END IF;
        -- PUBLIC has both by default; a hardened database may have revoked them.
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), role);
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), role);
    END LOOP;
END
$$;

-- The services check at start-up that every migration they ship is applied
-- (common/db.py require_schema): they read yoyo's record of applied migrations.
GRANT SELECT ON _yoyo_migration TO facestream_ingest, facestream_api, facestream_stream;

GRANT SELECT ON api_keys TO facestream_ingest;
GRANT SELECT ON erased_images TO facestream_ingest;
GRANT INSERT ON images TO facestream_ingest;

GRANT SELECT, INSERT, UPDATE ON api_keys TO facestream_api;
GRANT SELECT, UPDATE, DELETE ON images TO facestream_api;
GRANT SELECT ON image_blobs TO facestream_api;
GRANT SELECT, UPDATE ON faces TO facestream_api;
GRANT SELECT, INSERT, DELETE ON people TO facestream_api;
GRANT SELECT, INSERT ON person_faces TO facestream_api;
GRANT SELECT, INSERT ON erased_images TO facestream_api;
GRANT SELECT, INSERT ON erased_people TO facestream_api;
GRANT SELECT, DELETE ON retries TO facestream_api;

GRANT SELECT, INSERT, UPDATE, DELETE ON
    images, image_blobs, faces, people, person_faces, erased_images, erased_people, retries,
    gallery_faces, gallery_purge
TO facestream_stream;
