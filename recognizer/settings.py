"""The recognizer's one settings object (environment variables, prefix-free)."""

from __future__ import annotations

import os

from pydantic import Field, field_validator

from common.settings import ServiceSettings
from recognizer.calibration import DEFAULT_FALSE_ACCEPT, RuleSource
from recognizer.core import MAX_PIXELS, DetectionConfig
from recognizer.gallery import AGGREGATIONS, DEFAULT_ANN_THRESHOLD, default_rule
from schemas.events import MatchRule

#: The shipped decision rule, chosen on lfw-dev (docs/MATCHING.md); each part is a setting.
_RULE = default_rule()


class RecognizerSettings(ServiceSettings):
    workers: int = Field(default=os.cpu_count() or 1, ge=1, description="Recognizer processes to run.")
    recognizer_group_id: str = "facestream-recognizers"
    # The decision rule: defaults chosen on lfw-dev, see docs/MATCHING.md.
    match_false_accept: float = Field(
        default=DEFAULT_FALSE_ACCEPT,
        ge=0,
        lt=1,
        description="The share of strangers' faces that may be named; tolerance and margin are derived"
        " from it for the gallery as it is (recognizer.calibration). 0: the fixed MATCH_TOLERANCE and"
        " MATCH_MARGIN.",
    )
    match_tolerance: float = Field(default=_RULE.tolerance, gt=0, lt=2)
    match_margin: float = Field(default=_RULE.margin, ge=0, lt=1)
    match_aggregation: str = Field(
        default=_RULE.aggregation, description=f"One of {', '.join(AGGREGATIONS)}."
    )
    match_cohort: int = Field(default=_RULE.cohort, ge=1, description="People averaged for the margin.")
    gallery_ann_threshold: int = Field(
        default=DEFAULT_ANN_THRESHOLD,
        ge=0,
        description="People (with a face) from which centroid matching uses the approximate index"
        " (faiss IVF, exact re-ranking); below it, and for min/mean, search is exact. 0: always exact.",
    )
    detection_max_side: int = Field(default=1024, ge=64)
    detection_upsample: int = Field(default=1, ge=0, le=3)
    max_pixels: int = Field(
        default=MAX_PIXELS,
        ge=1,
        description="Declared pixel count above which an image is refused undecoded; sized to the"
        " 1 GiB memory limit (see recognizer.core.MAX_PIXELS).",
    )
    max_decoded_pixels: int = Field(
        default=DetectionConfig.max_decoded_pixels,
        ge=1_000_000,
        description="Larger images are decoded reduced to this many pixels (JPEG in the decoder).",
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9101, description="/metrics, /healthz, /readyz of the worker pool.")

    @field_validator("match_aggregation")
    @classmethod
    def _known_aggregation(cls, v: str) -> str:
        if v not in AGGREGATIONS:
            raise ValueError(f"MATCH_AGGREGATION must be one of {', '.join(AGGREGATIONS)}")
        return v

    def rule(self) -> MatchRule:
        return default_rule(
            self.match_tolerance, self.match_margin, self.match_aggregation, self.match_cohort
        )

    def rules(self) -> RuleSource:
        """The rule each match uses: derived from MATCH_FALSE_ACCEPT, or the fixed one."""
        return RuleSource(self.rule(), self.match_false_accept or None)

    def detection(self) -> DetectionConfig:
        return DetectionConfig(
            upsample=self.detection_upsample,
            detection_max_side=self.detection_max_side,
            max_pixels=self.max_pixels,
            max_decoded_pixels=self.max_decoded_pixels,
        )
