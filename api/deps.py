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
from api.scans import ScanClient, ScanReplies
from api.settings import ApiSettings
from common.publisher import Publisher


@dataclass(frozen=True)
class Resources:
    """The clients one running app holds; created and closed by its lifespan."""

    pool: asyncpg.Pool
    publisher: Publisher  # the one way to publish (common.publisher): acknowledged, behind a breaker
    scans: ScanClient  # finds faces in photos, through the recognizers (api/scans.py)
    replies: ScanReplies  # reads the recognizers' answers to this replica's scans
    outages: OutageWatch  # is an unknown id "not yet" (just after a database outage) or 404?


def _resources(request: Request) -> Resources:
    return cast(Resources, request.app.state.resources)


def get_settings(request: Request) -> ApiSettings:
    return cast(ApiSettings, request.app.state.settings)


def get_pool(request: Request) -> asyncpg.Pool:
    return _resources(request).pool


def get_publisher(request: Request) -> Publisher:
    return _resources(request).publisher


def get_scans(request: Request) -> ScanClient:
    return _resources(request).scans


def get_outages(request: Request) -> OutageWatch:
    return _resources(request).outages


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
ScansDep = Annotated[ScanClient, Depends(get_scans)]
OutagesDep = Annotated[OutageWatch, Depends(get_outages)]
