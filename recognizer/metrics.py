"""Prometheus metrics of the recognizer (multiprocess mode: one scrape for all workers)."""

from prometheus_client import Counter, Gauge, Histogram

from schemas.events import MatchRule, Outcome, ScanKind

IMAGES = Counter("facestream_recognizer_images_total", "Images processed, by outcome.", ["outcome"])
STAGE_SECONDS = Histogram(
    "facestream_recognizer_stage_seconds",
    "Time per recognition stage.",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4),
)
FACES_PER_IMAGE = Histogram(
    "facestream_recognizer_faces_per_image", "Faces found per image.", buckets=(0, 1, 2, 3, 5, 8, 13, 21)
)
MATCH_DISTANCE = Histogram(
    "facestream_recognizer_match_distance",
    "Distance from each face to its nearest enrolled person.",
    buckets=(0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 1.0),
)
GALLERY_SIZE = Gauge(
    "facestream_recognizer_gallery_faces", "Encodings in this worker's gallery.", multiprocess_mode="liveall"
)
GALLERY_VERSION = Gauge(
    "facestream_recognizer_gallery_version",
    "Gallery topic offset this worker has applied.",
    multiprocess_mode="liveall",
)
SCANS = Counter(
    "facestream_recognizer_scans_total",
    "Photos scanned for the API (faces.scan), by kind (enroll, probe, detect) and outcome (the "
    "reply's result; expired: read after the API gave up, not scanned; failed: the scan raised). "
    "A photo that kills two processes is answered crashed by the pool's supervisor, not counted here.",
    ["kind", "outcome"],
)
SCAN_SECONDS = Histogram(
    "facestream_recognizer_scan_seconds",
    "Time to scan one photo for the API, by kind (enrollment encodes jittered copies: ~1-2 s).",
    ["kind"],
    buckets=(0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8),
)

RULE = Gauge(
    "facestream_recognizer_rule",
    "The decision rule this worker applies now: tolerance, margin, and, when derived from"
    " MATCH_FALSE_ACCEPT, the target and the false-accept rate estimated for the gallery.",
    ["part"],
    multiprocess_mode="liveall",
)


def observe_rule(rule: MatchRule) -> None:
    """The rule's parts as gauges (a fixed rule has no target or estimate)."""
    RULE.labels("tolerance").set(rule.tolerance)
    RULE.labels("margin").set(rule.margin)
    if rule.false_accept_target is not None:
        RULE.labels("false_accept_target").set(rule.false_accept_target)
    if rule.false_accept_estimate is not None:
        RULE.labels("false_accept_estimate").set(rule.false_accept_estimate)


# Known label values start at 0, so a rate by outcome or stage is 0 rather than no data
# before the first image (alerts and dashboards cannot tell "none yet" from "not scraped").
# Outcomes: schemas.events.Outcome plus recognizer.worker's "failed" (bad input) and
# "error" (retried), "skipped" (not for the recognizers); stages: those recognizer.core.recognize times.
for _outcome in (*(o.value for o in Outcome), "failed", "error", "skipped"):
    IMAGES.labels(_outcome)
for _stage in ("decode", "detect", "encode", "match"):
    STAGE_SECONDS.labels(_stage)
for _kind in ScanKind:
    SCAN_SECONDS.labels(_kind.value)
    for _result in (
        "face_found",
        "probe",
        "several_faces",
        "no_face",
        "rejected",
        "detection",
        "failed",
        "expired",
    ):
        SCANS.labels(_kind.value, _result)
