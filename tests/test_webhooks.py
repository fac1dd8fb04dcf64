"""Webhooks against a real receiver: an aiohttp server on a free 127.0.0.1 port that checks
every request's signature the way the README tells receivers to, records what it got and
answers what the test scripts (500s, 429 with Retry-After, 4xx, or no answer at all).

Visits and hash changes come from the real pipeline playing a real clip; gallery changes
from the REST API (``live=False``); the retry rules from a ``Webhooks`` fed directly, which
is what Presence and the gallery call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import itertools
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from facestream import webhooks
from facestream.config import Config, WebhookConfig
from facestream.events import GalleryChange
from facestream.gallery_types import Person
from facestream.metrics import Metrics
from facestream.privacy import redact_receiver
from facestream.webhooks import Webhooks

from .conftest import OBAMA, free_port, upload
from .support import metric, wait_for

Client = TestClient[Any, Any]

SECRET = "test-secret-0123456789-abcdef"
#: Receivers refuse requests signed longer ago than this (the README's five minutes).
MAX_AGE_S = 300
SIGNATURE_RE = re.compile(r"t=(\d+),v1=([0-9a-f]{64})")
ADA = Person(hash=hashlib.sha256(b"ada").hexdigest(), name="Ada", model="SFace",
               created_at=1.7e9, has_email=False)
HASH_DOC_KEYS = {"hash", "name", "known", "similarity", "faces", "signal", "updated_at",
                 "frame_position"}


def verify(secret: str, header: str, body: bytes) -> str | None:
    """What a receiver does: None for a genuine, fresh request, else why it is refused."""
    try:
        fields = dict(item.split("=", 1) for item in header.split(","))
        t = int(fields["t"])
    except (KeyError, ValueError):
        return "no valid signature"
    if abs(time.time() - t) > MAX_AGE_S:
        return "stale timestamp"
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), fields.get("v1", "").encode()):
        return "bad signature"
    return None


@dataclass
class Request:
    at: float
    method: str
    headers: dict[str, str]
    body: bytes
    doc: dict[str, Any] | None
    status: int


class Receiver:
    """A webhook receiver on 127.0.0.1. ``answers``: the statuses (or (status, headers)) of
    its first verified requests, then 200; ``hang``: it never answers; ``delay``: it answers
    after that long. Each delivery id is recorded once in ``events`` (retries and replays are
    acknowledged but not recorded again)."""

    def __init__(self, answers: list[Any] | None = None, hang: bool = False,
                 delay: float = 0.0) -> None:
        self.answers = list(answers or [])
        self.hang = hang
        self.delay = delay
        self.requests: list[Request] = []
        self.events: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self._release = asyncio.Event()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        reason = verify(SECRET, request.headers.get("X-Facestream-Signature", ""), body)
        if reason is not None:
            self.rejected.append(reason)
            return web.json_response({"error": reason}, status=401)
        doc = json.loads(body)
        answer = self.answers.pop(0) if self.answers else 200
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        self.requests.append(Request(time.monotonic(), request.method, dict(request.headers),
                                     body, doc, status))
        if self.hang:
            await self._release.wait()
        await asyncio.sleep(self.delay)
        if status == 200 and doc["delivery"] not in {e["delivery"] for e in self.events}:
            self.events.append(doc)
        return web.Response(status=status, headers=headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self._release.set()
        await self._runner.cleanup()

    def well_formed(self) -> None:
        """Every request was a signed JSON POST whose headers name its event and delivery."""
        assert self.rejected == []
        for r in self.requests:
            assert r.method == "POST" and r.doc is not None
            assert r.headers["Content-Type"] == "application/json"
            assert r.headers["X-Facestream-Event"] == r.doc["event"]
            assert r.headers["X-Facestream-Delivery"] == r.doc["delivery"]
            assert str(uuid.UUID(r.doc["delivery"])) == r.doc["delivery"]
            signed = SIGNATURE_RE.fullmatch(r.headers["X-Facestream-Signature"])
            assert signed and abs(int(signed[1]) - time.time()) < 10


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    """Start receivers; they stop after the app under test (request this fixture first)."""
    started: list[Receiver] = []

    async def start(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        await receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhooks, "RETRY_FIRST_S", 0.02)
    monkeypatch.setattr(webhooks, "RETRY_MAX_S", 0.2)


def hook(receiver: Receiver | str, events: tuple[str, ...] = ("arrived", "left"),
         **options: Any) -> WebhookConfig:
    url = receiver if isinstance(receiver, str) else receiver.url
    return WebhookConfig(url=url, events=events, secret=SECRET, **options)


def with_hooks(cfg: Config, *hooks: WebhookConfig) -> Config:
    return dataclasses.replace(cfg, webhooks=hooks,
                               camera=dataclasses.replace(cfg.camera, name="door"))


@contextlib.asynccontextmanager
async def running(*hooks: WebhookConfig) -> AsyncIterator[Webhooks]:
    sender = Webhooks(hooks, Metrics())
    await sender.start()
    try:
        yield sender
    finally:
        await sender.close()


async def enroll(client: Client, name: str) -> str:
    resp = await client.post("/faces", data=upload("image", OBAMA, name=name))
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["hash"])


async def webhook_health(client: Client) -> list[dict[str, Any]]:
    return list((await (await client.get("/healthz")).json())["webhooks"])


# -- each kind of event, only to the receivers that asked for it --------------------------


async def test_arrivals_and_departures_of_a_real_clip_reach_the_visits_receiver(
    receivers: Any, app_client: Any, config_factory: Callable[..., Config],
    face_then_empty_video: Path,
) -> None:
    """The clip shows a stranger 3 s, nobody 3 s, and loops: the receiver gets the same
    arrivals and departures as GET /events, in order, and none of the hash changes."""
    visits = await receivers()
    cfg = config_factory(face_then_empty_video, presence={"depart_after_s": 1.0})
    client = await app_client(with_hooks(cfg, hook(visits)))

    def one_visit_ended() -> bool:
        return any(e["event"] == "left" for e in visits.events)

    await wait_for(one_visit_ended, 30, 0.1)
    log = list(reversed((await (await client.get("/events")).json())["events"]))
    await wait_for(lambda: len(visits.events) >= len(log), 10)
    fields = ("event", "visit", "hash", "name", "known", "at", "camera")
    assert [tuple(e[k] for k in fields) for e in visits.events[:len(log)]] == \
        [tuple(e[k] for k in fields) for e in log]
    assert [e["event"] for e in visits.events[:2]] == ["arrived", "left"]
    assert visits.events[0]["visit"] == visits.events[1]["visit"]
    assert visits.events[0]["camera"] == "door" and visits.events[0]["known"] is False
    assert {e["event"] for e in visits.events} <= {"arrived", "left"}
    assert set(visits.events[0]) == {"event", "delivery", "at", "camera", "visit", "hash",
                                     "name", "known"}
    assert len(visits.requests) == len(visits.events)  # nothing retried or sent twice
    visits.well_formed()


async def test_changes_of_who_is_in_view_reach_the_hash_receiver(
    receivers: Any, app_client: Any, config_factory: Callable[..., Config],
    face_then_empty_video: Path,
) -> None:
    """Each change of the face in view, as the websocket's "hash" message: the face comes,
    the face goes; each event's ``previous`` is the one before's hash, nothing missed."""
    hashes = await receivers()
    cfg = config_factory(face_then_empty_video, presence={"depart_after_s": 1.0})
    client = await app_client(with_hooks(cfg, hook(hashes, ("hash",))))

    def gone() -> bool:
        return any(e["hash"] is None for e in hashes.events)

    await wait_for(gone, 30, 0.1)
    events = hashes.events
    assert {e["event"] for e in events} == {"hash"}  # no arrivals or departures
    first, second = events[0], events[1]
    assert first["previous"] is None and first["hash"] is not None
    assert first["faces"] and first["faces"][0]["hash"] == first["hash"]
    assert first["signal"] is True and first["camera"] == "door"
    assert (second["hash"], second["previous"], second["faces"]) == (None, first["hash"], [])
    for before, after in itertools.pairwise(events):
        assert after["previous"] == before["hash"] != after["hash"]
    assert set(first) == HASH_DOC_KEYS | {"event", "delivery", "at", "camera", "previous"}
    assert (await (await client.get("/hash")).json()).keys() >= HASH_DOC_KEYS
    hashes.well_formed()


async def test_gallery_changes_reach_only_the_gallery_receiver(
    receivers: Any, app_client: Any, config_factory: Callable[..., Config],
) -> None:
    gallery, visits = await receivers(), await receivers()
    cfg = with_hooks(config_factory(), hook(gallery, ("gallery",)), hook(visits))
    client = await app_client(cfg, live=False)
    face = await enroll(client, "Barack")
    assert (await client.patch(f"/faces/{face}", json={"name": "Barack Obama"})).status == 200
    assert (await client.delete(f"/faces/{face}")).status == 200

    await wait_for(lambda: len(gallery.events) >= 3, 10)
    await asyncio.sleep(0.3)  # time for anything else to arrive, at either receiver
    assert [(e["change"], e["face"]["hash"], e["face"]["name"]) for e in gallery.events] == [
        ("added", face, "Barack"), ("renamed", face, "Barack Obama"),
        ("deleted", face, "Barack Obama")]
    added = gallery.events[0]
    assert set(added) == {"event", "delivery", "at", "camera", "change", "face"}
    assert added["face"]["samples"] and added["face"]["thumbnail"] == f"/faces/{face}/thumbnail"
    assert added["event"] == "gallery" and added["camera"] is None  # no camera's doing
    assert visits.requests == []  # asked for arrivals and departures only
    gallery.well_formed()


# -- the signature ------------------------------------------------------------------------


async def test_the_signature_lets_a_receiver_reject_tampering_and_replays(
    receivers: Any,
) -> None:
    """t and the body are both signed: a changed body or timestamp fails the check, an old
    timestamp is refused, and an exact replay is known by its delivery id."""
    receiver = await receivers()
    async with running(hook(receiver, ("gallery",))) as hooks:
        hooks.gallery_changed(GalleryChange("renamed", ADA))
        await wait_for(lambda: receiver.events, 5)
    receiver.well_formed()
    sent = receiver.requests[0]
    t, mac = SIGNATURE_RE.fullmatch(sent.headers["X-Facestream-Signature"]).groups()  # type: ignore[union-attr]
    assert abs(int(t) - time.time()) < 10
    assert mac == hmac.new(SECRET.encode(), f"{t}.".encode() + sent.body,
                           hashlib.sha256).hexdigest()
    assert json.loads(sent.body)["face"]["name"] == "Ada"

    async def post(body: bytes, signature: str) -> tuple[int, Any]:
        headers = {**{k: v for k, v in sent.headers.items()
                      if k.startswith("X-Facestream") or k == "Content-Type"},
                   "X-Facestream-Signature": signature}
        async with aiohttp.ClientSession() as session, \
                session.post(receiver.url, data=body, headers=headers) as resp:
            return resp.status, await resp.json() if resp.status != 200 else None

    signature = sent.headers["X-Facestream-Signature"]
    tampered = sent.body.replace(b'"Ada"', b'"Eve"')
    assert tampered != sent.body
    assert await post(tampered, signature) == (401, {"error": "bad signature"})
    assert await post(sent.body, f"t={int(t) + 60},v1={mac}") == (
        401, {"error": "bad signature"})
    old = int(time.time()) - MAX_AGE_S - 60
    stale = hmac.new(SECRET.encode(), f"{old}.".encode() + sent.body, hashlib.sha256)
    assert await post(sent.body, f"t={old},v1={stale.hexdigest()}") == (
        401, {"error": "stale timestamp"})
    assert await post(sent.body, signature) == (200, None)  # a replay: acknowledged ...
    assert len(receiver.events) == 1  # ... and known by its delivery id


# -- retries ------------------------------------------------------------------------------


async def test_server_errors_are_retried_with_the_same_delivery_id(
    receivers: Any, app_client: Any, config_factory: Callable[..., Config],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhooks, "RETRY_FIRST_S", 0.1)
    monkeypatch.setattr(webhooks, "RETRY_MAX_S", 1.0)
    receiver = await receivers(answers=[500, 500])
    cfg = with_hooks(config_factory(), hook(receiver, ("gallery",)))
    client = await app_client(cfg, live=False)
    face = await enroll(client, "Barack")

    async def delivered() -> bool:
        return (await webhook_health(client))[0]["delivered"] == 1

    await wait_for(delivered, 10)
    assert [r.status for r in receiver.requests] == [500, 500, 200]
    assert len({r.doc["delivery"] for r in receiver.requests if r.doc}) == 1
    assert len({r.body for r in receiver.requests}) == 1  # the same event, re-signed
    assert [e["face"]["hash"] for e in receiver.events] == [face]
    first, second, third = (r.at for r in receiver.requests)
    assert second - first >= 0.08 and third - second >= 0.16  # doubling, +-20 %
    health = await webhook_health(client)
    assert health == [{"url": f"http://127.0.0.1:{receiver.port}/***", "events": ["gallery"],
                       "delivered": 1, "failed": 0, "dropped": 0, "pending": 0,
                       "last_status": 200,
                       "last_error": None, "last_success_at": pytest.approx(time.time(),
                                                                           abs=10)}]
    for result, count in (("delivered", 1), ("failed", 0), ("dropped", 0)):
        name = f'facestream_webhook_deliveries_total{{result="{result}"}}'
        assert await metric(client, name) == count
    receiver.well_formed()


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
async def test_timeouts_throttling_and_server_errors_are_retried(
    receivers: Any, status: int
) -> None:
    receiver = await receivers(answers=[status])
    async with running(hook(receiver, ("gallery",))) as hooks:
        hooks.gallery_changed(GalleryChange("renamed", ADA))
        await wait_for(lambda: hooks.senders[0].delivered == 1, 5)
        assert [r.status for r in receiver.requests] == [status, 200]
        assert hooks.status()[0]["failed"] == 0


@pytest.mark.parametrize("status", [302, 400, 401, 404, 410, 422])
async def test_other_answers_are_final_and_not_retried(receivers: Any, status: int) -> None:
    receiver = await receivers(answers=[(status, {"Location": "/elsewhere"})])
    async with running(hook(receiver, ("gallery",))) as hooks:
        hooks.gallery_changed(GalleryChange("renamed", ADA))
        await wait_for(lambda: hooks.senders[0].failed == 1, 5)
        await asyncio.sleep(0.3)  # retries would come within 0.02-0.2 s
        assert [(r.method, r.status) for r in receiver.requests] == [("POST", status)]
        state = hooks.status()[0]
        assert (state["delivered"], state["failed"], state["pending"]) == (0, 1, 0)
        assert state["last_status"] == status
        assert state["last_error"].startswith(f"answered {status}")


async def test_retry_after_is_honoured(receivers: Any, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    monkeypatch.setattr(webhooks, "RETRY_MAX_S", 5.0)
    receiver = await receivers(answers=[(429, {"Retry-After": "1"})])
    async with running(hook(receiver, ("gallery",))) as hooks:
        hooks.gallery_changed(GalleryChange("renamed", ADA))
        await wait_for(lambda: len(receiver.events) == 1, 5)
    first, second = (r.at for r in receiver.requests)
    assert 0.95 <= second - first < 3  # not the 0.02 s backoff


async def test_a_long_retry_after_is_capped(receivers: Any) -> None:
    receiver = await receivers(answers=[(503, {"Retry-After": "3600"})])
    async with running(hook(receiver, ("gallery",))) as hooks:
        hooks.gallery_changed(GalleryChange("renamed", ADA))
        await wait_for(lambda: len(receiver.events) == 1, 5)
    first, second = (r.at for r in receiver.requests)
    assert second - first < 1.0  # RETRY_MAX_S is 0.2 s here


async def test_an_event_fails_after_max_attempts(caplog: pytest.LogCaptureFixture) -> None:
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    async with running(hook(down, ("gallery",), max_attempts=3)) as hooks:
        hooks.gallery_changed(GalleryChange("renamed", ADA))
        await wait_for(lambda: hooks.senders[0].failed == 1, 5)
        state = hooks.status()[0]
    assert (state["delivered"], state["failed"], state["pending"]) == (0, 1, 0)
    assert state["last_status"] is None and state["last_error"].startswith("cannot connect")
    assert "not delivered after 3 attempt(s)" in caplog.text


# -- a receiver that is down -----------------------------------------------------------------


async def test_a_receiver_that_never_answers_stays_bounded_and_delays_nobody(
    receivers: Any, app_client: Any, config_factory: Callable[..., Config],
) -> None:
    """One receiver accepts connections and never answers: its queue stays at queue_size
    (the oldest dropped, counted), while the API and the other receiver go on at once."""
    stuck, fine = await receivers(hang=True), await receivers()
    cfg = with_hooks(config_factory(), hook(stuck, ("gallery",), queue_size=3, timeout_s=60),
                     hook(fine, ("gallery",)))
    client = await app_client(cfg, live=False)
    face = await enroll(client, "Barack")
    t0 = time.monotonic()
    for i in range(10):
        resp = await client.patch(f"/faces/{face}", json={"name": f"Barack {i}"})
        assert resp.status == 200
        assert (await client.get("/hash")).status == 200
    assert time.monotonic() - t0 < 5
    await wait_for(lambda: len(fine.events) == 11, 5)
    assert [e["face"]["name"] for e in fine.events] == ["Barack", *(f"Barack {i}"
                                                                    for i in range(10))]
    stuck_state, fine_state = await webhook_health(client)
    assert len(stuck.requests) == 1  # the first event, still waiting for an answer
    assert {k: stuck_state[k] for k in ("delivered", "failed", "dropped", "pending",
                                        "last_status")} == {
        "delivered": 0, "failed": 0, "dropped": 8, "pending": 3, "last_status": None}
    assert (fine_state["delivered"], fine_state["dropped"]) == (11, 0)
    name = 'facestream_webhook_deliveries_total{result="dropped"}'
    assert await metric(client, name) == 8


async def test_shutdown_flushes_briefly_then_stops(receivers: Any) -> None:
    """What is queued goes out if it can within a second; a receiver that does not answer
    holds shutdown up only that long, and what it did not get counts as dropped."""
    slow, stuck = await receivers(delay=0.1), await receivers(hang=True)
    hooks = Webhooks([hook(slow, ("gallery",)), hook(stuck, ("gallery",))], Metrics())
    await hooks.start()
    for change in ("added", "renamed", "deleted"):
        hooks.gallery_changed(GalleryChange(change, ADA))
    t0 = time.monotonic()
    await hooks.close()
    assert 0.9 < time.monotonic() - t0 < 3
    assert [e["change"] for e in slow.events] == ["added", "renamed", "deleted"]
    assert [(s["delivered"], s["dropped"], s["pending"]) for s in hooks.status()] == [
        (3, 0, 0), (0, 3, 0)]
    hooks.gallery_changed(GalleryChange("renamed", ADA))  # after close: ignored
    assert hooks.status()[0]["pending"] == 0


# -- what /healthz shows ----------------------------------------------------------------------


@pytest.mark.parametrize("url,shown", [
    # Tokens without digits, short ones, and tokens in the host name: only the domain stays.
    ("https://hooks.example.org/services/abcdefghijklmnopqr", "https://***.example.org/***"),
    ("https://h.example.org/x/AbC9", "https://***.example.org/***"),
    ("https://tok3nhostabc.example.net/hook", "https://***.example.net/***"),
    ("https://u:p@a1b2.hooks.example.org:8443/T0/abc?code=1#x",
     "https://***.example.org:8443/***?***"),
    ("http://192.168.1.20:8123/api/webhook/facestream-door", "http://192.168.1.20:8123/***"),
    ("http://[fe80::1]:80/", "http://[fe80::1]:80"),
    ("https://example.org", "https://example.org"),
])
def test_a_receiver_is_shown_by_its_domain_only(url: str, shown: str) -> None:
    assert redact_receiver(url) == shown


async def test_health_shows_each_receiver_without_its_secrets(
    receivers: Any, app_client: Any, config_factory: Callable[..., Config],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver = await receivers(answers=[500])
    url = (f"http://hookuser:pa55-w0rd@127.0.0.1:{receiver.port}/hook/T0A1B2C3D4E5F6G7H8"
           "?token=qwerty123&team=ops")
    cfg = with_hooks(config_factory(), hook(url, ("gallery", "arrived")))
    client = await app_client(cfg, live=False)
    await enroll(client, "Barack")

    async def delivered() -> bool:
        return (await webhook_health(client))[0]["delivered"] == 1

    await wait_for(delivered, 10)
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["webhooks"] == [{
        "url": f"http://127.0.0.1:{receiver.port}/***?***",
        "events": ["gallery", "arrived"], "delivered": 1, "failed": 0, "dropped": 0,
        "pending": 0, "last_status": 200, "last_error": None,
        "last_success_at": pytest.approx(time.time(), abs=10)}]
    assert "answered 500" in caplog.text  # the log did speak of this receiver ...
    shown = [await resp.text(), await (await client.get("/metrics")).text(), caplog.text]
    for secret in (SECRET, "pa55-w0rd", "hookuser", "qwerty123", "T0A1B2C3D4E5F6G7H8"):
        assert all(secret not in text for text in shown), secret  # ... never of its secrets
    receiver.well_formed()

