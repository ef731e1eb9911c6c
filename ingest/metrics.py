"""Prometheus metrics of the ingest service (requests are counted by common.http)."""

from prometheus_client import Counter, Gauge

ACCEPTED_IMAGES = Counter("facestream_ingest_images_accepted_total", "Images accepted and published.")
ACCEPTED_BYTES = Counter("facestream_ingest_accepted_bytes_total", "Bytes of images accepted.")
REJECTED = Counter(
    "facestream_ingest_rejected_total", "Uploads refused, by HTTP status or cause.", ["reason"]
)
PENDING_UNRECORDED = Counter(
    "facestream_ingest_pending_rows_unrecorded_total",
    "Accepted images whose pending row ingest did not write before answering: database_unavailable "
    "(kept in the backlog and written later), backlog_full (dropped from the backlog) or refused "
    "(the database refused the row). The projector still creates every row from its event.",
    ["reason"],
)
PENDING_BACKLOG = Gauge(
    "facestream_ingest_pending_backlog", "Pending rows held in memory until PostgreSQL answers again."
)
