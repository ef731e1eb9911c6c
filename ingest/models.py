"""Request and response bodies of the ingest API."""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas.lifecycle import Status

ACCEPTED = "accepted"


class AcceptedImage(BaseModel):
    id: str
    filename: str | None
    size_bytes: int
    status: Status = Status.PENDING
    result_url: str = Field(description="Absolute URL of the image's result in the results API.")


class AcceptedImages(BaseModel):
    data: list[AcceptedImage]
    count: int


class FileFate(BaseModel):
    """One file of a batch that was not wholly accepted."""

    id: str = Field(
        description="The id the file was (or, on a retry with the same Idempotency-Key, will be) given."
    )
    filename: str | None
    size_bytes: int
    fate: str = Field(description=f'"{ACCEPTED}", or why the broker did not take the file.')
    result_url: str | None = Field(description="Set when the file was accepted.")


class PartlyAccepted(BaseModel):
    """503: every file of the request in order, accepted or not; retry the others."""

    detail: str
    data: list[FileFate]
    count: int


class LegacyPath(BaseModel):
    path: str = Field(min_length=1, max_length=4096)


class LegacyPaths(BaseModel):
    paths: list[LegacyPath] = Field(min_length=1)


class LegacyFate(BaseModel):
    id: str
    path: str
    fate: str = Field(description=f'"{ACCEPTED}", or why the broker did not take the file.')
    result_url: str | None


class LegacyPartlyAccepted(BaseModel):
    """503 of the legacy endpoints: every path in order, accepted or not."""

    detail: str
    images: list[LegacyFate]
