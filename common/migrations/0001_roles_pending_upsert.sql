-- depends: 0001_roles
--
-- ingest's pending row is INSERT ... ON CONFLICT (id) DO NOTHING (ingest/pending.py): a
-- conflict target is read, so PostgreSQL wants SELECT on its column. Only that column:
-- ingest still cannot read a result (status, faces, people).
GRANT SELECT (id) ON images TO facestream_ingest;
