"""Prometheus metrics of the ingest service (requests are counted by common.http)."""

from prometheus_client import Counter

ACCEPTED_IMAGES = Counter("facestream_ingest_images_accepted_total", "Images accepted and published.")
ACCEPTED_BYTES = Counter("facestream_ingest_accepted_bytes_total", "Bytes of images accepted.")
REJECTED = Counter(
    "facestream_ingest_rejected_total", "Uploads refused, by HTTP status or cause.", ["reason"]
)
