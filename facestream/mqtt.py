"""MQTT: who is in view, arrivals and departures, and who is home, for Home Assistant,
Node-RED and scripts, the way Frigate and Double Take publish theirs.

Topics (``P`` = ``mqtt.topic_prefix``, ``C`` = ``camera.name``):

- ``P/available``: ``online`` / ``offline``, retained; ``offline`` is also the last will, so
  a crashed server shows as unavailable.
- ``P/C/hash``: the ``GET /hash`` document, retained, whenever who is in view changes (not
  when boxes only move).
- ``P/C/events``: every arrival and departure, the websocket's ``event`` message.
- ``P/C/snapshot``: the annotated frame (JPEG) of each arrival, retained.
- ``P/people/<hash>/state``: ``present`` / ``away`` per enrolled person, retained, following
  their visits (a person leaves ``presence.depart_after_s`` after they were last seen).

With ``mqtt.discovery_prefix`` set, Home Assistant's MQTT discovery creates a device
"facestream" with a sensor per camera (who is in view, with the ``/hash`` document as its
attributes), a presence binary sensor per enrolled person and a camera entity for the
snapshot; a person's sensor is added, renamed and removed as the gallery changes.

The pipeline never waits for the broker. Changes only record what is to be sent: the latest
value of each retained topic (a state superseded before it was sent is sent once, as its
latest value) and a bounded queue of events (the oldest dropped, and counted, when the broker
has been away for long). One task publishes them; it reconnects with backoff and then sends
every retained value again, since a restarted broker may have lost them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import aiomqtt

from .config import MqttConfig
from .events import Camera, GalleryChange, Output
from .gallery_types import Person
from .metrics import Metrics
from .presence import Snapshot, VisitEvent
from .privacy import redact_source
from .retry import Backoff, Outage

log = logging.getLogger(__name__)

#: Reconnection backoff, doubling from the first to the last.
RECONNECT_MIN_S: Final = 0.5
RECONNECT_MAX_S: Final = 30.0
#: One publish (QoS 1: until the broker acknowledges it) may take this long.
PUBLISH_TIMEOUT_S: Final = 10.0
KEEPALIVE_S: Final = 30
#: Home Assistant renders who is in view from the /hash document.
IN_VIEW_TEMPLATE: Final = ("{{ (value_json.faces | map(attribute='name') "
                           "| map('default', 'unknown', true) | join(', ')) or 'nobody' }}")


def _json(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


class MqttBridge(Output):
    """Turns presence, visits and gallery changes into MQTT messages (see the module)."""

    def __init__(self, config: MqttConfig, version: str, metrics: Metrics,
                 people: Callable[[], Iterable[Person]]) -> None:
        self.config = config
        self.version = version
        self._metrics = metrics
        self._people = people
        self.available_topic = f"{config.topic_prefix}/available"
        self._node = f"facestream_{config.topic_prefix}"
        #: topic -> latest payload of every retained topic (b"": remove the retained message).
        self._retained: dict[str, bytes] = {}
        #: Retained topics whose latest payload the broker has not acknowledged, in order.
        self._dirty: dict[str, None] = {}
        self._events: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        #: Enrolled people as announced: hash -> name.
        self._announced: dict[str, str] = {}
        #: Everybody with an open visit (by hash), enrolled or not: on which cameras.
        self._visiting: dict[str, set[str]] = {}
        self.state = "connecting"
        self.published = 0
        self.dropped = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    # -- what changed (event-loop callbacks; they never wait) -----------------------------

    def topic(self, camera: str, what: str) -> str:
        """``<prefix>/<camera>/<what>``: hash, events, snapshot."""
        return f"{self.config.topic_prefix}/{camera}/{what}"

    async def start(self) -> None:
        self.people_changed()
        self._task = asyncio.create_task(self._run(), name="mqtt")

    def camera_added(self, camera: Camera) -> None:
        """Publish what happens on ``camera`` (its topics, its Home Assistant entities)."""
        name, presence = camera.name, camera.presence
        for visit in presence.open_visits():
            self._visiting.setdefault(visit.person, set()).add(name)
        self._set(self.topic(name, "hash"), _json(presence.snapshot.to_json()))
        if self.config.discovery_prefix:
            self._set(self._camera_sensor_topic(name), _json(self._camera_sensor(name)))
            self._set(self._camera_entity_topic(name), _json(self._camera_entity(name)))
        self.people_changed()

    def camera_removed(self, camera: Camera) -> None:
        """``camera`` was removed: its retained topics and entities go."""
        name = camera.name
        for topic in (self.topic(name, "hash"), self.topic(name, "snapshot")):
            self._set(topic, b"")
        if self.config.discovery_prefix:
            self._set(self._camera_sensor_topic(name), b"")
            self._set(self._camera_entity_topic(name), b"")
        for cameras in self._visiting.values():
            cameras.discard(name)
        self.people_changed()

    def snapshot_changed(self, camera: Camera, new: Snapshot, old: Snapshot,
                         boxes_due: bool) -> None:
        if (new.who(), new.signal) != (old.who(), old.signal) or \
                (new.primary and new.primary.hash) != (old.primary and old.primary.hash):
            self._set(self.topic(camera.name, "hash"), _json(new.to_json()))

    def visit_event(self, camera: Camera, event: VisitEvent) -> None:
        person = event.visit.person
        if event.kind == "arrived":
            self._visiting.setdefault(person, set()).add(camera.name)
            latest = camera.hub.latest
            if latest is not None and latest.jpeg:
                self._set(self.topic(camera.name, "snapshot"), latest.jpeg)
        else:
            self._visiting.get(person, set()).discard(camera.name)
            if not self._visiting.get(person):
                self._visiting.pop(person, None)
        self._queue_event(self.topic(camera.name, "events"), _json(event.to_json()))
        if person in self._announced:
            self._set(self._state_topic(person), self._state(person))

    def gallery_changed(self, change: GalleryChange) -> None:
        self.people_changed()

    def people_changed(self) -> None:
        """Announce who is enrolled now: new and renamed people, and remove the others."""
        now = {person.hash: person.name for person in self._people()}
        for person in self._announced.keys() - now.keys():
            if self.config.discovery_prefix:
                self._set(self._person_topic(person), b"")
            self._set(self._state_topic(person), b"")
        for person, name in now.items():
            if self._announced.get(person) != name and self.config.discovery_prefix:
                self._set(self._person_topic(person), _json(self._person_sensor(person, name)))
            self._set(self._state_topic(person), self._state(person))
        self._announced = now

    def _state(self, person: str) -> bytes:
        """Present while visiting any camera."""
        return b"present" if self._visiting.get(person) else b"away"

    def _set(self, topic: str, payload: bytes) -> None:
        if self._retained.get(topic) == payload:
            return
        self._retained[topic] = payload
        self._dirty.pop(topic, None)
        self._dirty[topic] = None
        self._wake.set()

    def _queue_event(self, topic: str, payload: bytes) -> None:
        if len(self._events) >= self.config.queue_size:
            self._events.popleft()
            self.dropped += 1
            self._metrics.mqtt_messages.labels("dropped").inc()
        self._events.append((topic, payload))
        self._wake.set()

    # -- Home Assistant discovery ----------------------------------------------------------

    def _device(self) -> dict[str, Any]:
        return {"identifiers": [self._node], "name": "facestream",
                "manufacturer": "facestream", "model": "face recognition server",
                "sw_version": self.version}

    def _common(self, unique: str) -> dict[str, Any]:
        return {"unique_id": f"{self._node}_{unique}", "availability_topic":
                self.available_topic, "device": self._device()}

    def _camera_sensor_topic(self, camera: str) -> str:
        return f"{self.config.discovery_prefix}/sensor/{self._node}/{camera}_in_view/config"

    def _camera_sensor(self, camera: str) -> dict[str, Any]:
        hash_topic = self.topic(camera, "hash")
        return {"name": f"{camera} in view", "state_topic": hash_topic,
                "value_template": IN_VIEW_TEMPLATE, "json_attributes_topic": hash_topic,
                "icon": "mdi:face-recognition", **self._common(f"{camera}_in_view")}

    def _camera_entity_topic(self, camera: str) -> str:
        return f"{self.config.discovery_prefix}/camera/{self._node}/{camera}/config"

    def _camera_entity(self, camera: str) -> dict[str, Any]:
        return {"name": f"{camera} snapshot", "topic": self.topic(camera, "snapshot"),
                **self._common(f"{camera}_snapshot")}

    def _person_topic(self, person: str) -> str:
        return (f"{self.config.discovery_prefix}/binary_sensor/{self._node}/"
                f"{person[:16]}/config")

    def _person_sensor(self, person: str, name: str) -> dict[str, Any]:
        return {"name": name, "state_topic": self._state_topic(person),
                "payload_on": "present", "payload_off": "away", "device_class": "presence",
                **self._common(person[:16])}

    def _state_topic(self, person: str) -> str:
        return f"{self.config.topic_prefix}/people/{person}/state"

    # -- delivery ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For /healthz."""
        return {"state": self.state, "broker": redact_source(self.config.url),
                "published": self.published, "queued": len(self._events) + len(self._dirty),
                "dropped": self.dropped, "reconnects": self.reconnects,
                "last_error": self.last_error}

    def _client(self) -> aiomqtt.Client:
        url = urlsplit(self.config.url)
        tls = url.scheme == "mqtts"
        context = None
        if tls:
            context = ssl.create_default_context(cafile=self.config.ca_file or None)
        return aiomqtt.Client(
            url.hostname or "localhost", url.port or (8883 if tls else 1883),
            username=self.config.username or (unquote(url.username) if url.username else None),
            password=self.config.password or (unquote(url.password) if url.password else None),
            identifier=self.config.client_id or f"facestream-{self.config.topic_prefix}",
            will=aiomqtt.Will(self.available_topic, b"offline", qos=1, retain=True),
            keepalive=KEEPALIVE_S, timeout=PUBLISH_TIMEOUT_S, tls_context=context,
            logger=logging.getLogger("facestream.mqtt.client"))

    async def _run(self) -> None:
        backoff = Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S)
        outage = Outage(log)
        shown = redact_source(self.config.url)
        while True:
            try:
                async with self._client() as client:
                    await client.publish(self.available_topic, b"online", qos=1, retain=True)
                    if self.state != "connected":  # the first time, or back from an outage
                        log.info("MQTT: connected to %s", shown)
                    outage.clear()
                    self.state, self.last_error = "connected", None
                    backoff.reset()
                    self._metrics.mqtt_connected.set(1)
                    # A restarted broker may have lost every retained message: send them all.
                    self._dirty = dict.fromkeys(t for t, v in self._retained.items() if v)
                    try:
                        await self._serve(client)
                    except asyncio.CancelledError:
                        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                            await client.publish(self.available_topic, b"offline", qos=1,
                                                 retain=True, timeout=2.0)
                        raise
            except aiomqtt.MqttError as exc:
                outage.failed(logging.WARNING, "MQTT: broker %s unreachable (%s); retrying, "
                              "events are kept (up to %d)", shown, exc, self.config.queue_size)
                self.reconnects += self.state == "connected"
                self.state, self.last_error = "disconnected", str(exc)
                self._metrics.mqtt_connected.set(0)
            await asyncio.sleep(backoff.next())

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish until the connection is lost: then MqttError. Losing it is noticed at
        once, not at the next publish (which may be long in coming when nothing changes)."""
        publisher = asyncio.create_task(self._publish_forever(client))
        watcher = asyncio.create_task(self._watch(client))
        try:
            done, _ = await asyncio.wait({publisher, watcher},
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (publisher, watcher):
                task.cancel()
            await asyncio.gather(publisher, watcher, return_exceptions=True)
        for task in done:
            task.result()  # the MqttError that ended it
        raise aiomqtt.MqttError("the connection to the broker ended")

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        async for _ in client.messages:  # nothing is subscribed: it only ends with the link
            pass

    async def _publish_forever(self, client: aiomqtt.Client) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # States first, so that a script woken by an event finds them current.
            while self._dirty or self._events:
                if self._dirty:
                    topic = next(iter(self._dirty))
                    payload = self._retained[topic]
                    await client.publish(topic, payload, qos=1, retain=True)
                    if self._retained.get(topic) == payload:  # not changed meanwhile
                        self._dirty.pop(topic, None)
                        if not payload:
                            del self._retained[topic]  # removed: nothing left to resend
                else:
                    topic, payload = self._events[0]
                    await client.publish(topic, payload, qos=1)
                    self._events.popleft()
                self.published += 1
                self._metrics.mqtt_messages.labels("published").inc()

    async def close(self) -> None:
        """Say ``offline`` (when connected) and stop."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._metrics.mqtt_connected.set(0)
