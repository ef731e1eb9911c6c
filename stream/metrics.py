"""Prometheus metrics of the stream service (dispatch, retries, dead letters, projector)."""

from prometheus_client import Counter, Histogram

DISPATCHED = Counter(
    "facestream_stream_dispatched_total", "Images sent to the recognizers, by kind.", ["kind"]
)
RETRIES = Counter("facestream_stream_retries_total", "Recognition retries scheduled.")
DEAD_LETTERS = Counter(
    "facestream_stream_dead_letters_total", "Messages dead-lettered, by reason.", ["reason"]
)
SKIPPED = Counter(
    "facestream_stream_skipped_total", "Events skipped (unknown type or version), by topic.", ["topic"]
)
PROJECTED = Counter("facestream_projector_events_total", "Events written to PostgreSQL, by type.", ["type"])
PROJECTOR_WRITE_SECONDS = Histogram(
    "facestream_projector_write_seconds",
    "Time to write one event to PostgreSQL.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PROJECTOR_DB_ERRORS = Counter("facestream_projector_db_errors_total", "Failed database writes (retried).")
IMAGES_FINISHED = Counter(
    "facestream_images_finished_total", "Images that reached a final status.", ["status"]
)
END_TO_END_SECONDS = Histogram(
    "facestream_end_to_end_seconds",
    "From submission to the result being queryable in PostgreSQL.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
)
AGENT_CRASHES = Counter(
    "facestream_stream_agent_crashes_total", "Agents stopped by an unexpected error, by agent.", ["agent"]
)
