"""The MQTT handler of images.results (run by notify.consumer.ResultsConsumer in the group
``MQTT_GROUP_ID``): each result's messages (notify.mqtt), published through
notify.mqtt_link.

Contract: a result is handled once its messages are all acknowledged; until then it
raises (the database or the broker is down) and the consumer tries the same result again,
so nothing is skipped while the broker is away, and a message may arrive twice. A camera
is announced to Home Assistant (its discovery config, retained) before its first message
from this process, and on every (re)connection for every camera this process knows: those
of stored images at start (up to ``MQTT_MAX_CAMERAS``) and those seen since.
"""

from __future__ import annotations

import asyncpg

from notify.consumer import DATABASE_RETRIED, Result
from notify.mqtt import Publication, camera_slug, discovery_config, failed, recognized
from notify.mqtt_link import MqttLink, MqttUnavailable
from notify.readmodel import context_of, known_cameras
from notify.settings import NotifySettings
from schemas.events import FacesRecognized

#: What :meth:`MqttPublisher.handle` raises for a reason that passes.
RETRIED: tuple[type[BaseException], ...] = (*DATABASE_RETRIED, MqttUnavailable)


class MqttPublisher:
    def __init__(self, pool: asyncpg.Pool, settings: NotifySettings) -> None:
        broker = settings.mqtt_broker()
        if broker is None:
            raise ValueError("MQTT_URL is not set")
        self.pool = pool
        self.settings = settings
        self.topics = settings.mqtt_topics()
        self.link = MqttLink(broker, settings, self.announcements)
        #: camera slug -> the camera's name, for every camera announced.
        self.cameras: dict[str, str | None] = {}

    async def load_cameras(self) -> None:
        """Know the cameras of stored images (announced on connecting)."""
        for camera in await known_cameras(self.pool, self.settings.mqtt_max_cameras):
            self.cameras.setdefault(camera_slug(camera), camera)

    def announcements(self) -> list[Publication]:
        return [discovery_config(self.topics, camera) for camera in self.cameras.values()]

    async def handle(self, result: Result) -> str:
        ctx = await context_of(self.pool, result)
        if isinstance(result, FacesRecognized):
            messages = recognized(result, self.topics, camera=ctx.camera, names=ctx.names, erased=ctx.erased)
        else:
            messages = failed(result, self.topics, camera=ctx.camera)
        slug = camera_slug(ctx.camera)
        first = slug not in self.cameras
        if first:
            messages.insert(0, discovery_config(self.topics, ctx.camera))
        await self.link.publish(messages)
        if first:
            self.cameras[slug] = ctx.camera
        return "published"
