"""What routes depend on, as ``Annotated`` aliases; the clients themselves come from
:func:`api.app.create_app`'s lifespan, never from import time.

Tests swap any of them through ``app.dependency_overrides[get_x]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

import asyncpg
from fastapi import Depends, Request

from api.catchup import OutageWatch
from api.enrollment import EnrollmentPool
from api.settings import ApiSettings
from common.publisher import Publisher


@dataclass(frozen=True)
class Resources:
    """The clients one running app holds; created and closed by its lifespan."""

    pool: asyncpg.Pool
    publisher: Publisher  # the one way to publish (common.publisher): acknowledged, behind a breaker
    encoder: EnrollmentPool  # runs api.enrollment.scan_photo out of the event loop
    outages: OutageWatch  # is an unknown id "not yet" (just after a database outage) or 404?


def _resources(request: Request) -> Resources:
    return cast(Resources, request.app.state.resources)


def get_settings(request: Request) -> ApiSettings:
    return cast(ApiSettings, request.app.state.settings)


def get_pool(request: Request) -> asyncpg.Pool:
    return _resources(request).pool


def get_publisher(request: Request) -> Publisher:
    return _resources(request).publisher


def get_encoder(request: Request) -> EnrollmentPool:
    return _resources(request).encoder


def get_outages(request: Request) -> OutageWatch:
    return _resources(request).outages


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
EncoderDep = Annotated[EnrollmentPool, Depends(get_encoder)]
OutagesDep = Annotated[OutageWatch, Depends(get_outages)]
