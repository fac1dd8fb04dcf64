"""MQTT against a real broker: Debian's mosquitto, started here on a free loopback port.

What a Home Assistant or Node-RED user relies on: the retained states (who is in view, who is
home, online/offline) are right after any restart of either side, every arrival and departure
is an event, discovery follows the gallery, and a broker that goes away costs nothing but the
messages beyond the queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import aiohttp
import aiomqtt
import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from facestream.appkeys import CAMERAS, MQTT
from facestream.config import Config, MqttConfig
from facestream.presence import VisitEvent, VisitRecord

from .conftest import (
    BIDEN,
    OBAMA,
    TALKING_HEAD,
    free_port,
    read_video,
    self_signed_cert,
    upload,
    write_video,
)
from .servers import Server
from .support import wait_for

Client = TestClient[Any, Any]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    """mosquitto on 127.0.0.1, without persistence: a restart forgets every retained message."""

    def __init__(self, root: Path, extra: str = "allow_anonymous true\n",
                 scheme: str = "mqtt") -> None:
        if not Path(MOSQUITTO).exists():
            pytest.fail("mosquitto is not installed: the README's install step (or "
                        "`apt-get install mosquitto`) installs it")
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.conf = root / f"mosquitto-{self.port}.conf"
        # As root, mosquitto would drop to its own user, who cannot read the test's files.
        self.conf.write_text(f"listener {self.port} 127.0.0.1\n{extra}persistence false\n"
                             "user root\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


class Listener:
    """A client subscribed to everything, as Home Assistant and a script would be."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[tuple[str, bytes, bool]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._listen(ready))
        await asyncio.wait_for(ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task

    async def _listen(self, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port,
                                  identifier=f"test-{uuid.uuid4().hex[:8]}") as client:
            await client.subscribe("#", qos=1)
            ready.set()
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else \
                    str(message.payload).encode()
                self.messages.append((str(message.topic), payload, message.retain))

    def latest(self, topic: str) -> bytes | None:
        found = [p for t, p, _ in self.messages if t == topic]
        return found[-1] if found else None

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t == topic]

    async def until(self, topic: str, predicate: Callable[[bytes | None], bool],
                    timeout: float = 10) -> bytes | None:
        return await wait_for(lambda: predicate(self.latest(topic)) or None, timeout) and \
            self.latest(topic)


async def retained(port: int, settle: float = 0.5) -> dict[str, bytes]:
    """What a client connecting now is told: every retained message on the broker."""
    async with Listener(port) as fresh:
        await asyncio.sleep(settle)
    return {t: p for t, p, r in fresh.messages if r}


def mqtt_config(config_factory: Callable[..., Config], broker: Broker, *args: Any,
                mqtt: dict[str, Any] | None = None, **kwargs: Any) -> Config:
    return dataclasses.replace(config_factory(*args, **kwargs),
                               mqtt=MqttConfig(url=broker.url, **(mqtt or {})))


DISCOVERY = "homeassistant/binary_sensor/facestream_facestream"


async def test_discovery_and_people_follow_the_gallery(
    app_client: Any, config_factory: Callable[..., Config], broker: Broker
) -> None:
    """Enroll, rename, delete: Home Assistant's binary sensor per person appears, is renamed
    and disappears; each person's state is retained; the camera's sensor and snapshot entity
    and the availability are there from the start."""
    client = await app_client(mqtt_config(config_factory, broker), live=False)
    async with Listener(broker.port) as ha:
        await ha.until("facestream/available", lambda p: p == b"online")
        obama = (await (await client.post("/faces", data=upload(
            "image", OBAMA, name="Barack Obama"))).json())["hash"]
        biden = (await (await client.post("/faces", data=upload(
            "image", BIDEN, name="Joe Biden"))).json())["hash"]
        config = json.loads(await ha.until(f"{DISCOVERY}/{obama[:16]}/config", bool) or b"")
        assert config == {
            "name": "Barack Obama", "state_topic": f"facestream/people/{obama}/state",
            "payload_on": "present", "payload_off": "away", "device_class": "presence",
            "unique_id": f"facestream_facestream_{obama[:16]}",
            "availability_topic": "facestream/available",
            "device": {"identifiers": ["facestream_facestream"], "name": "facestream",
                       "manufacturer": "facestream", "model": "face recognition server",
                       "sw_version": config["device"]["sw_version"]}}
        resp = await client.patch(f"/faces/{obama}", json={"name": "Barack H. Obama"})
        assert resp.status == 200
        await ha.until(f"{DISCOVERY}/{obama[:16]}/config",
                       lambda p: p is not None and json.loads(p or b"{}").get("name") ==
                       "Barack H. Obama")
        assert (await client.delete(f"/faces/{biden}")).status == 200
        await ha.until(f"{DISCOVERY}/{biden[:16]}/config", lambda p: p == b"")

    # What Home Assistant finds when it (re)connects: exactly the people enrolled now.
    state = await retained(broker.port)
    people = {t for t in state if t.startswith(DISCOVERY)}
    assert people == {f"{DISCOVERY}/{obama[:16]}/config"}
    assert state[f"facestream/people/{obama}/state"] == b"away"
    assert f"facestream/people/{biden}/state" not in state
    assert state["facestream/available"] == b"online"
    sensor = json.loads(state["homeassistant/sensor/facestream_facestream/camera_in_view/config"])
    assert sensor["state_topic"] == sensor["json_attributes_topic"] == "facestream/camera/hash"
    camera = json.loads(state["homeassistant/camera/facestream_facestream/camera/config"])
    assert camera["topic"] == "facestream/camera/snapshot"
    assert json.loads(state["facestream/camera/hash"])["hash"] is None  # nobody, no camera


async def test_a_live_timeline_gives_the_retained_states_and_events(
    app_client: Any, config_factory: Callable[..., Config], broker: Broker,
    face_then_empty_video: Path,
) -> None:
    """The clip shows Alexandria 3 s, nobody 3 s, and loops. On the broker: she arrives
    (event, state present, /hash document with her, a snapshot of the frame), leaves (event,
    state away, /hash document with nobody), and arrives again; the events are the stored
    visits, in order."""
    cfg = mqtt_config(config_factory, broker, face_then_empty_video,
                      presence={"depart_after_s": 1.0})
    client = await app_client(cfg)
    ok, frame = cv2.imencode(".jpg", read_video(TALKING_HEAD, limit=1)[0])
    assert ok
    async with Listener(broker.port) as ha:
        resp = await client.post("/faces", data=upload("image", frame.tobytes(),
                                                       name="Alexandria"))
        assert resp.status == 201, await resp.text()
        her = (await resp.json())["hash"]
        state = f"facestream/people/{her}/state"
        events_topic = "facestream/camera/events"

        def events() -> list[dict[str, Any]]:
            return [json.loads(p) for p in ha.on(events_topic)]

        await wait_for(lambda: [e["event"] for e in events()][:3] == ["arrived", "left",
                                                                         "arrived"], 30, 0.1)
        first = events()[:3]
        assert all(e["hash"] == her and e["name"] == "Alexandria" and e["known"] and
                   e["camera"] == "camera" for e in first)
        assert first[0]["visit"] == first[1]["visit"] != first[2]["visit"]
        # Her state went away -> present -> away -> present, each retained.
        assert [p for p in ha.on(state)][-3:] == [b"present", b"away", b"present"]
        hashes = [json.loads(p)["hash"] for p in ha.on("facestream/camera/hash")]
        assert her in hashes and None in hashes[hashes.index(her):]
        jpeg = ha.latest("facestream/camera/snapshot")
        assert jpeg and cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
        stored = {v["id"]: v for v in (await (await client.get("/visits")).json())["visits"]}
        assert stored[first[0]["visit"]]["left_at"] == pytest.approx(first[1]["at"])
    # Events are not retained; states are.
    kept = await retained(broker.port)
    assert events_topic not in kept and kept[state] in (b"present", b"away")
    health = await (await client.get("/healthz")).json()
    assert health["mqtt"]["state"] == "connected" and health["mqtt"]["dropped"] == 0
    assert health["mqtt"]["broker"] == broker.url


async def test_a_broker_that_goes_away_costs_only_the_events_beyond_the_queue(
    app_client: Any, config_factory: Callable[..., Config], broker: Broker,
    tmp_path: Path
) -> None:
    """The broker stops: recognition and /hash go on at full speed, /healthz says so, events
    queue up to mqtt.queue_size (the oldest dropped and counted). It comes back empty: the
    server reconnects, says online, sends every retained state again and the queued events
    in order."""
    # A scene without faces: the only events are the 25 below.
    scene = read_video(TALKING_HEAD, limit=50)
    empty = write_video(tmp_path / "empty.mp4", [np.full_like(scene[0], 90) for _ in scene])
    cfg = mqtt_config(config_factory, broker, empty, mqtt={"queue_size": 10})
    client = await app_client(cfg)

    async def position() -> int:
        return int((await (await client.get("/hash")).json())["frame_position"])

    async with Listener(broker.port) as ha:
        await ha.until("facestream/available", lambda p: p == b"online")
    broker.stop()
    bridge = client.server.app[MQTT]
    camera = client.server.app[CAMERAS].first

    async def disconnected() -> bool:
        health = await (await client.get("/healthz")).json()
        return health["mqtt"]["state"] == "disconnected"

    await wait_for(disconnected, 10)
    before = await position()
    sent = []
    for i in range(25):  # visits, as Presence reports them
        record = VisitRecord(uuid.uuid4().hex, f"{i:064x}", None, False, "camera",
                             time.time(), None, None)
        bridge.visit_event(camera, VisitEvent("arrived", record))
        sent.append(record.id)
    await asyncio.sleep(1.0)
    assert await position() > before  # the pipeline did not wait for the broker
    health = (await (await client.get("/healthz")).json())["mqtt"]
    assert health["dropped"] == 15 and health["last_error"]
    metrics = await (await client.get("/metrics")).text()
    assert 'facestream_mqtt_messages_total{result="dropped"} 15.0' in metrics
    assert "facestream_mqtt_connected 0.0" in metrics

    broker.start()  # empty: it lost every retained message
    async with Listener(broker.port) as ha:
        got = await wait_for(lambda: len(ha.on("facestream/camera/events")) >= 10 or None, 60)
        assert got
        assert [json.loads(p)["visit"] for p in ha.on("facestream/camera/events")] == sent[15:]
    state = await retained(broker.port)
    assert state["facestream/available"] == b"online"
    assert "facestream/camera/hash" in state
    assert "homeassistant/sensor/facestream_facestream/camera_in_view/config" in state
    health = (await (await client.get("/healthz")).json())["mqtt"]
    assert health["state"] == "connected" and health["reconnects"] == 1


async def test_offline_is_said_on_shutdown_and_by_the_last_will_on_a_crash(
    broker: Broker, tmp_path: Path
) -> None:
    """`python -m facestream` with [mqtt] in its config.toml: online while it runs; offline
    when it stops, and when it is killed (the broker publishes its last will)."""
    (tmp_path / "config.toml").write_text(f'[mqtt]\nurl = "{broker.url}"\n'
                                          'topic_prefix = "door"\n')
    async with aiohttp.ClientSession() as session:
        for stop in ("SIGTERM", "SIGKILL"):
            server = Server(TALKING_HEAD, tmp_path / "data", tmp_path, workers=1)
            try:
                await server.wait_ready(session)
                async with Listener(broker.port) as ha:
                    await ha.until("door/available", lambda p: p == b"online")
                    if stop == "SIGTERM":
                        assert server.stop() == 0
                    else:
                        server.proc.kill()
                        server.proc.wait()
                    await ha.until("door/available", lambda p: p == b"offline", 10)
            finally:
                server.stop()
            assert (await retained(broker.port))["door/available"] == b"offline"


def password_file(path: Path, user: str, password: str) -> Path:
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(path), user, password], check=True,
                   capture_output=True)
    return path


async def _mqtt_state(client: Client, expect: str) -> Any:
    mqtt = (await (await client.get("/healthz")).json())["mqtt"]
    return mqtt if mqtt["state"] == expect else None


async def test_tls_and_credentials_and_no_password_anywhere(
    app_client: Any, config_factory: Callable[..., Config], tmp_path: Path,
    caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that takes only TLS and a user name and password: facestream connects with
    the right ones (checking the broker's certificate against mqtt.ca_file), says why it
    cannot with a wrong one, and shows the password nowhere."""
    cert, key = self_signed_cert(tmp_path)
    passwords = password_file(tmp_path / "passwords", "facestream", "s3cret-broker-pw")
    secure = Broker(tmp_path, f"certfile {cert}\nkeyfile {key}\nallow_anonymous false\n"
                              f"password_file {passwords}\n", scheme="mqtts")
    secure.start()
    try:
        for password, expect in (("s3cret-broker-pw", "connected"),
                                 ("wrong-password-x", "disconnected")):
            cfg = dataclasses.replace(config_factory(), mqtt=MqttConfig(
                url=secure.url, username="facestream", password=password,
                ca_file=str(cert)))
            client = await app_client(cfg, live=False)

            mqtt = await wait_for(lambda c=client, e=expect: _mqtt_state(c, e), 15)
            assert mqtt["broker"] == secure.url
            if expect == "disconnected":
                assert "authori" in mqtt["last_error"].lower()
            body = await (await client.get("/healthz")).text()
            metrics = await (await client.get("/metrics")).text()
            assert password not in body + metrics + caplog.text
            await client.close()
    finally:
        secure.stop()


async def test_each_camera_has_its_topics_and_entities_until_it_is_removed(
    app_client: Any, config_factory: Callable[..., Config], broker: Broker
) -> None:
    base = mqtt_config(config_factory, broker)
    cfg = dataclasses.replace(base, cameras=tuple(
        dataclasses.replace(base.camera, name=n, source=str(TALKING_HEAD))
        for n in ("door", "hall")))
    client = await app_client(cfg, live=False)
    sensor = "homeassistant/sensor/facestream_facestream/{}_in_view/config"
    async with Listener(broker.port) as ha:
        for name in ("door", "hall"):
            await ha.until(sensor.format(name), bool)
            assert json.loads(ha.latest(f"facestream/{name}/hash") or b"")["hash"] is None
        assert (await client.delete("/cameras/hall")).status == 200
        await ha.until(sensor.format("hall"), lambda p: p == b"")
        await ha.until("facestream/hall/hash", lambda p: p == b"")
    state = await retained(broker.port)
    assert sensor.format("door") in state and sensor.format("hall") not in state
    assert "facestream/hall/hash" not in state and "facestream/door/hash" in state
