"""The connection to the MQTT broker (aiomqtt), kept up for as long as notify runs.

Contract:

* :meth:`MqttLink.run` connects (``MQTT_URL``; TLS for ``mqtts://``), with a Last Will
  that publishes ``offline`` (retained) on ``{prefix}/status`` if the connection is lost,
  then publishes ``online`` and the announcements (Home Assistant's discovery configs)
  and listens for Home Assistant's birth message (``online`` on ``{discovery}/status``)
  to announce again. Lost or refused (a wrong password, the broker down): it reconnects,
  backing off from 0.5 s to ``MQTT_RECONNECT_MAX_S``. It stops on ``stopping``, saying
  ``offline`` first.
* :meth:`MqttLink.publish` publishes with QoS 1 and returns once the broker acknowledged
  every message (PUBACK); otherwise (not connected within ``MQTT_TIMEOUT_S``, the
  connection lost, no PUBACK in time) it raises :class:`MqttUnavailable` and the caller
  tries again: a message may then arrive twice (at least once), never not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections.abc import Callable, Sequence

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from common.errors import FacestreamError
from notify import metrics
from notify.mqtt import ONLINE, BrokerAddress, Publication, Topics, status
from notify.settings import NotifySettings

log = logging.getLogger(__name__)


class MqttUnavailable(FacestreamError):
    """The broker did not acknowledge (not connected, the connection lost, no PUBACK)."""


class MqttLink:
    """``announce()`` gives what to publish on every connection and on Home Assistant's
    birth message (retained: discovery configs)."""

    def __init__(
        self, broker: BrokerAddress, settings: NotifySettings, announce: Callable[[], list[Publication]]
    ) -> None:
        self.broker = broker
        self.settings = settings
        self.topics: Topics = settings.mqtt_topics()
        self.announce = announce
        self.connected = asyncio.Event()
        self.client_id = settings.mqtt_client_id or f"facestream-notify-{secrets.token_hex(4)}"
        self._client: aiomqtt.Client | None = None
        self._delay = 0.5

    @property
    def where(self) -> str:
        return f"{self.broker.host}:{self.broker.port}"

    def _new_client(self) -> aiomqtt.Client:
        tls = ssl.create_default_context(cafile=self.settings.mqtt_ca_file) if self.broker.tls else None
        will = status(self.topics, online=False)
        return aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=self.client_id,
            will=aiomqtt.Will(will.topic, will.payload, qos=1, retain=True),
            timeout=self.settings.mqtt_timeout_s,
            keepalive=30,
            tls_context=tls,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Stay connected until ``stopping`` (see the module's contract)."""
        while not stopping.is_set():
            try:
                await self._session(stopping)
            except aiomqtt.MqttError as exc:
                metrics.MQTT_ERRORS.labels("connect").inc()
                log.warning(
                    "MQTT broker %s: %s; connecting again in %.1fs", self.where, _reason(exc), self._delay
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self._delay)
                self._delay = min(self._delay * 2, self.settings.mqtt_reconnect_max_s)

    async def _session(self, stopping: asyncio.Event) -> None:
        """One connection: announce, then listen until ``stopping`` (or raise when lost)."""
        async with self._new_client() as client:
            self._delay = 0.5
            await client.subscribe(self.topics.home_assistant_status, qos=1)
            await self._publish_on(client, [status(self.topics, online=True), *self.announce()])
            self._client = client
            self.connected.set()
            metrics.MQTT_CONNECTED.set(1)
            log.info("connected to the MQTT broker %s", self.where)
            try:
                await self._listen(client, stopping)
            finally:
                self._client = None
                self.connected.clear()
                metrics.MQTT_CONNECTED.set(0)
            with contextlib.suppress(MqttUnavailable):  # stopping: the Will is for a lost connection
                await self._publish_on(client, [status(self.topics, online=False)])

    async def _listen(self, client: aiomqtt.Client, stopping: asyncio.Event) -> None:
        """Announce again on each Home Assistant birth message; return on ``stopping``;
        raise :class:`aiomqtt.MqttError` when the connection is lost."""
        messages = client.messages
        stop = asyncio.ensure_future(stopping.wait())
        try:
            while True:
                incoming = asyncio.ensure_future(anext(messages))
                await asyncio.wait({incoming, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not incoming.done():
                    incoming.cancel()
                    return
                try:
                    message = incoming.result()
                except aiomqtt.MqttError as exc:
                    raise aiomqtt.MqttError("the connection was lost") from exc
                birth = message.topic.matches(self.topics.home_assistant_status)
                if birth and message.payload == ONLINE.encode():
                    log.info("Home Assistant (re)started: announcing the cameras again")
                    with contextlib.suppress(MqttUnavailable):  # the next message says the link is lost
                        await self._publish_on(client, self.announce())
        finally:
            stop.cancel()

    async def publish(self, publications: Sequence[Publication]) -> None:
        """Publish with QoS 1, in order; return once every PUBACK arrived (see the contract)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), self.settings.mqtt_timeout_s)
        client = self._client
        if client is None:
            metrics.MQTT_ERRORS.labels("publish").inc()
            raise MqttUnavailable(f"not connected to the MQTT broker {self.where}")
        await self._publish_on(client, publications)

    async def _publish_on(self, client: aiomqtt.Client, publications: Sequence[Publication]) -> None:
        # Each publish is queued with paho in call order (which keeps them in order on the
        # wire); they wait for their PUBACKs together.
        sends = [client.publish(p.topic, p.payload, qos=1, retain=p.retain) for p in publications]
        try:
            await asyncio.gather(*sends)
        except aiomqtt.MqttError as exc:
            metrics.MQTT_ERRORS.labels("publish").inc()
            raise MqttUnavailable(f"publishing to the MQTT broker {self.where}: {_reason(exc)}") from exc
        for p in publications:
            metrics.MQTT_PUBLISHED.labels(p.kind).inc()


def _reason(exc: aiomqtt.MqttError) -> str:
    """A readable reason; a refused connection says what to check."""
    if isinstance(exc, MqttConnectError):
        return f"the broker refused the connection ({exc}): check the user and password in MQTT_URL"
    return str(exc) or type(exc).__name__
