"""The dashboard at GET / in a real headless Chromium, against `python -m facestream` on real
videos: what a person curating the gallery and the visit history sees and clicks.

Two servers run for the whole module: one on a talking head that never leaves the view, one
on real photos of four people taking turns in front of the camera (a visit every 1.8 s).

Needs the `playwright` package and Debian's Chromium (see tests/browser_helpers.py). A missing
one fails the run instead of skipping it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import cv2
import numpy as np
import pytest
import pytest_asyncio

# browser_helpers imports playwright, and says what to install when it is missing.
from .browser_helpers import (
    DESKTOP,
    KNOWN_COLOR,
    PHONE,
    UNKNOWN_COLOR,
    Browser,
    Locator,
    Page,
    Route,
    async_playwright,
    expect,
    expected_label_width,
    label_width,
    launch_chromium,
    natural_width,
    stream_frame,
    wait_for_js,
    watch_for_errors,
)
from .conftest import (
    BIDEN,
    FACES,
    OBAMA,
    OBAMA2,
    OTHER_HEAD,
    TALKING_HEAD,
    upload,
    write_video,
)
from .rtsp_camera import make_clip
from .servers import Server

# Two servers and one browser for the module; every test gets a fresh page and empty gallery.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def _clip_length(path: Path) -> tuple[int, float]:
    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()


CLIP_FRAMES, CLIP_FPS = _clip_length(TALKING_HEAD)

TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)

LFW = FACES / "lfw"
#: People whose first LFW photo shows one face (Jimmy Carter's, say, shows two).
VISITORS = ("Angela_Bassett", "Hugo_Chavez", "Ann_Veneman", "Jacques_Rogge")
#: Each visitor is in view this long, then nobody for the gap: a visit every 1.8 s, and each
#: person is back 6.2 s after leaving (beyond the tracker's 5 s memory of a lost face).
VISITOR_S, GAP_S, VISITORS_FPS = 1.0, 0.8, 25.0
#: A visit ends 0.4 s after its face is gone; a stranger is announced after 0.3 s in view.
VISITORS_CONFIG = """\
[presence]
depart_after_s = 0.4
unknown_grace_s = 0.3
"""
#: The talking head's server may be given cameras reading files (POST /cameras refuses them
#: unless the config allows it).
HEAD_CONFIG = """\
[server]
api_camera_files = true
"""
#: What the dashboard shows per page: gallery cards, and visits in the history.
CARDS_PER_PAGE = 24
VISITS_PER_PAGE = 20
#: From a face's arrival until its visit is stored, at most (grace, analysis, the writer).
ARRIVAL_LAG_S = 1.5


def lfw_photo(person: str) -> Path:
    return min((LFW / person).glob("*.jpg"))


def js_iso(seconds: float) -> str:
    """``new Date(seconds * 1000).toISOString()``: UTC, milliseconds truncated."""
    ms = int(seconds * 1000)
    at = datetime.fromtimestamp(ms // 1000, UTC)
    return f"{at:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


class Api:
    """Direct HTTP calls, to arrange state and to check what the page did."""

    def __init__(self, server: Server, session: aiohttp.ClientSession) -> None:
        self.url = server.url
        self.session = session

    async def get(self, path: str) -> dict:
        async with self.session.get(self.url + path) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.url + path, **kwargs) as resp:
            return resp.status, await resp.json()

    async def faces(self) -> list[dict]:
        """Everybody enrolled, oldest first (GET /faces answers at most 200 at a time)."""
        faces: list[dict] = []
        while True:
            body = await self.get(f"/faces?limit=200&offset={len(faces)}")
            faces += body["faces"]
            if not body["faces"] or len(faces) >= body["total"]:
                return faces

    async def enroll_photo(self, photo: Path, name: str) -> tuple[int, dict]:
        form = aiohttp.FormData()
        form.add_field("image", photo.read_bytes(), filename=photo.name,
                       content_type="image/jpeg")
        form.add_field("name", name)
        return await self.call("POST", "/faces", data=form)

    async def enroll(self, photo: Path, name: str) -> str:
        status, body = await self.enroll_photo(photo, name)
        assert status == 201, body
        return str(body["hash"])

    async def visits(self, **query: str) -> list[dict]:
        """Visits, newest first (up to 200: more than any test makes)."""
        return (await self.get("/visits?" + urlencode({**query, "limit": 200})))["visits"]

    async def wait_for(self, check: Callable[[], Awaitable[Any]], what: str,
                       timeout: float = 30) -> Any:
        """Poll ``check`` until it returns something true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := await check():
                return result
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    async def finished_visit(self, person: str) -> dict:
        """The newest visit of ``person`` that has ended (waiting for one)."""

        async def ended() -> dict | None:
            return next((v for v in await self.visits(person=person)
                         if v["left_at"] is not None), None)

        return await self.wait_for(ended, f"a finished visit of {person}")

    async def enroll_live(self, name: str) -> str:
        async with self.session.post(self.url + "/faces",
                                     json={"from_live": True, "name": name}) as resp:
            assert resp.status == 201, await resp.text()
            return (await resp.json())["hash"]

    async def clear_gallery(self) -> None:
        for face in await self.faces():
            async with self.session.delete(f"{self.url}/faces/{face['hash']}") as resp:
                assert resp.status == 200, await resp.text()

    async def live_hash(self, timeout: float = 20) -> str:
        """The hash of the face in view, once there is one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = await self.get("/hash")
            if state["hash"]:
                return state["hash"]
            await asyncio.sleep(0.1)
        raise AssertionError("no face came into view")

    async def steady_face(self, margin_s: float = 3.5, timeout: float = 20) -> str:
        """The hash of the face in view, at a moment when the looping clip has ``margin_s``
        left before it starts over. (Reopening the file at the end of the clip makes the face
        leave the view for a moment; an action on the face in view must not race that.)"""
        last = CLIP_FRAMES - margin_s * CLIP_FPS
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = await self.get("/hash")
            if state["hash"] and 0 <= state["frame_position"] <= last:
                return state["hash"]
            await asyncio.sleep(0.05)
        raise AssertionError("no face in view early enough in the clip")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


@pytest.fixture(scope="module")
def visitors_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four VISITORS' photos in turn, VISITOR_S each with GAP_S of nobody after each."""
    frames = []
    for person in VISITORS:
        photo = cv2.imread(str(lfw_photo(person)))
        frames += [photo] * round(VISITOR_S * VISITORS_FPS)
        frames += [np.full_like(photo, 90)] * round(GAP_S * VISITORS_FPS)
    return write_video(tmp_path_factory.mktemp("video") / "visitors.mp4", frames, VISITORS_FPS)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers(
    session: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory,
    visitors_video: Path,
) -> AsyncIterator[tuple[Server, Server]]:
    """The module's two servers, started together (so the visitors' history builds up while
    the first tests run): an 8 s clip of one person talking, looping, so a face is always in
    view; and the visitors, with the presence settings of VISITORS_CONFIG. Afterwards each
    must have shut down cleanly."""
    head = tmp_path_factory.mktemp("browser")
    (head / "config.toml").write_text(HEAD_CONFIG)
    visits = tmp_path_factory.mktemp("browser-visits")
    (visits / "config.toml").write_text(VISITORS_CONFIG)  # read from the server's cwd
    started: list[Server] = []
    try:
        started.append(Server(TALKING_HEAD, head / "data", head))
        started.append(Server(visitors_video, visits / "data", visits, workers=1))
        for server in started:
            await server.wait_ready(session)
        yield started[0], started[1]
    finally:
        codes = [server.stop() for server in started]
    for server, code in zip(started, codes):
        assert code == 0, server.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def talking_head(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def visitors(servers: tuple[Server, Server]) -> Server:
    return servers[1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await launch_chromium(playwright)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def api(talking_head: Server, session: aiohttp.ClientSession) -> Api:
    api = Api(talking_head, session)
    await api.clear_gallery()
    return api


async def new_page(browser: Browser, errors: list[str]) -> Page:
    """A page in a context of its own; its uncaught errors and violations of the server's
    Content-Security-Policy go to ``errors``."""
    context = await browser.new_context(viewport=DESKTOP)
    page = await context.new_page()
    await watch_for_errors(page, errors)
    return page


async def open_page(browser: Browser, url: str, errors: list[str]) -> Page:
    page = await new_page(browser, errors)
    await page.goto(url)
    return page


@pytest_asyncio.fixture(loop_scope="module")
async def visitors_api(visitors: Server, session: aiohttp.ClientSession) -> Api:
    """The visitors' server with nobody enrolled (strangers' visits stay)."""
    api = Api(visitors, session)
    await api.clear_gallery()
    return api


async def dashboard(browser: Browser, api: Api, query: str = "?video=mjpeg"
                    ) -> AsyncIterator[Page]:
    """The dashboard of ``api``'s server. Fails on any uncaught JS error, and on anything
    the server's Content-Security-Policy refused. By default the MJPEG view: most tests read
    the stream's frames (its overlay is the server's); ``query`` "" is the default view."""
    errors: list[str] = []
    page = await open_page(browser, api.url + "/" + query, errors)
    await expect(page.get_by_test_id("connection")).to_have_text("live")
    yield page
    await page.context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser, api: Api) -> AsyncIterator[Page]:
    """The talking head's dashboard, opened after the gallery was emptied."""
    async for opened in dashboard(browser, api):
        yield opened


@pytest_asyncio.fixture(loop_scope="module")
async def visitors_page(browser: Browser, visitors_api: Api) -> AsyncIterator[Page]:
    """The visitors' dashboard, opened after the gallery was emptied."""
    async for opened in dashboard(browser, visitors_api):
        yield opened


def message(page: Page) -> Locator:
    """The text of the success message on the page."""
    return page.get_by_test_id("message").get_by_test_id("notice-text")


def error_message(page: Page) -> Locator:
    return page.get_by_test_id("error").get_by_test_id("notice-text")


def card(page: Page, face_hash: str) -> Locator:
    return page.locator(f'[data-testid=face-card][data-hash="{face_hash}"]')


def in_view(page: Page, face_hash: str) -> Locator:
    return page.locator(f'[data-testid=inview-face][data-hash="{face_hash}"]')


async def wait_for_label(page: Page, known: str | None = None, unknown: str | None = None,
                         timeout: float = 15) -> None:
    """Wait until the stream shown in the page carries exactly these labels: ``known`` drawn in
    the known-face colour, ``unknown`` in the unknown-face colour (None: no such label). The
    server draws names into the JPEG; a label is recognised by its colour and drawn width."""

    def matches(frame: np.ndarray, label: str | None, color: tuple[int, int, int]) -> bool:
        width = label_width(frame, color)
        if label is None:
            return width is None
        return width is not None and abs(width - expected_label_width(label, frame.shape[1])) <= 3

    deadline = time.monotonic() + timeout
    seen: tuple[int | None, int | None] = (None, None)
    while time.monotonic() < deadline:
        frame = await stream_frame(page)
        if frame is not None:
            seen = (label_width(frame, KNOWN_COLOR), label_width(frame, UNKNOWN_COLOR))
            if matches(frame, known, KNOWN_COLOR) and matches(frame, unknown, UNKNOWN_COLOR):
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the stream never showed known={known!r}, unknown={unknown!r}; "
                         f"label widths last seen (known, unknown): {seen}")


# -- tests ----------------------------------------------------------------------------------


async def test_stream_plays_reconnects_and_lists_who_is_in_view(
    browser: Browser, api: Api
) -> None:
    """With ?video=mjpeg the <img> shows the live MJPEG (frames change), comes back by itself
    after the stream fails, and the in-view list shows the face the server sees, labelled as
    unknown."""
    refused: list[str] = []

    async def fail_first_stream(route: Route) -> None:
        if not refused:
            refused.append(route.request.url)
            await route.abort()
        else:
            await route.continue_()

    errors: list[str] = []
    page = await new_page(browser, errors)
    await page.route("**/streaming*", fail_first_stream)
    try:
        await page.goto(api.url + "/?video=mjpeg")
        status = page.get_by_test_id("stream-status")
        await expect(status).to_contain_text("reconnecting")
        await wait_for_js(page.get_by_test_id("stream"), "img => img.naturalWidth > 0")
        await expect(status).to_be_hidden()
        assert len(refused) == 1
        assert await page.get_by_test_id("stream").get_attribute("src") != "/streaming"

        first = await stream_frame(page)
        assert first is not None and first.shape[:2] == (512, 512)  # the clip's own size
        await asyncio.sleep(1.0)
        second = await stream_frame(page)
        assert second is not None
        assert float(np.abs(first.astype(np.int16) - second).mean()) > 1.0, "stream is frozen"

        live = await api.live_hash()
        face = in_view(page, live)
        await expect(face).to_have_count(1)
        await expect(face.get_by_test_id("inview-name")).to_have_text(f"unknown {live[:8]}")
        await expect(face.get_by_test_id("enroll-this")).to_be_visible()
        await expect(page.get_by_test_id("enroll-face")).to_have_value(live)
        await expect(page.get_by_test_id("connection")).to_have_text("live")
    finally:
        await page.context.close()
    assert not errors, errors


async def test_a_camera_picker_and_a_grid_of_every_camera(
        browser: Browser, api: Api, tmp_path: Path) -> None:
    """Cameras added while the server runs: the page offers a picker and a grid; choosing a
    camera shows its stream and who is in view there. On a phone the grid holds all four
    cameras on one screen. The yard camera sends H.264 as cameras do (High profile, no
    B-frames): its own H.264 plays, passed through."""
    added = ("hall", "yard", "gate")
    yard = make_clip(tmp_path / "yard.mp4", 640, 360, 100, seconds=3.0).path
    for name in added:
        source = yard if name == "yard" else OTHER_HEAD
        status, body = await api.call("POST", "/cameras",
                                      json={"name": name, "source": str(source)})
        assert status == 201, body
    try:
        hall = ""
        deadline = time.monotonic() + 30
        while not hall and time.monotonic() < deadline:
            hall = (await api.get("/cameras/hall/hash"))["hash"] or ""
            await asyncio.sleep(0.2)
        assert hall
        async for page in dashboard(browser, api, query=""):  # the H.264 view
            select = page.get_by_test_id("camera-select")
            await expect(select).to_be_visible()
            assert await select.locator("option").all_inner_texts() == ["camera", *added]
            await select.select_option("hall")
            await expect(page.get_by_test_id("video")).to_have_attribute(
                "data-path", "/cameras/hall/video")
            await expect(in_view(page, hall)).to_have_count(1)
            assert "camera=hall" in page.url
            await page.get_by_test_id("grid-toggle").click()
            cells = page.get_by_test_id("grid-stream")
            await expect(cells).to_have_count(4)
            for i in range(4):  # each camera's H.264 playing in its cell
                await wait_for_js(cells.nth(i), "v => Number(v.dataset.frames) > 5")
            passed = await cells.evaluate_all("vs => vs.map(v => [v.dataset.path, "
                                              "v.dataset.passthrough])")
            assert sorted(passed) == [["/cameras/camera/video", "0"],
                                      ["/cameras/gate/video", "0"],
                                      ["/cameras/hall/video", "0"],
                                      ["/cameras/yard/video", "1"]], passed
            # On a phone the top bar wraps instead of running off the screen (issue 19:
            # 579 px wide on a 390 px screen with two cameras), and the four cameras are on
            # one screen, two by two, each still a usable picture.
            await page.set_viewport_size(PHONE)
            for control in ("camera-select", "grid-toggle", "connection"):
                await within_phone_width(page.get_by_test_id(control))
            assert await page.evaluate(
                "document.querySelector('.topbar').scrollWidth") <= PHONE["width"]
            await page.get_by_test_id("camera-grid").scroll_into_view_if_needed()
            boxes = [await cells.nth(i).bounding_box() for i in range(4)]
            assert all(b is not None and b["width"] >= 150 for b in boxes), boxes
            for i in range(4):
                await within_phone_width(cells.nth(i))
            top = min(b["y"] for b in boxes if b)
            assert max(b["y"] + b["height"] for b in boxes if b) - top <= PHONE["height"]
            # A camera removed meanwhile (by the API or a config reload) leaves the page's
            # picker and grid at its next look at GET /cameras (every 5 s).
            status, _ = await api.call("DELETE", "/cameras/gate")
            assert status == 200
            await expect(select.locator("option")).to_have_count(3, timeout=8000)
            await expect(cells).to_have_count(3)
    finally:
        for name in added:
            status, _ = await api.call("DELETE", f"/cameras/{name}")
            assert status in (200, 404)


async def test_enroll_rename_and_delete_from_the_page(page: Page, api: Api) -> None:
    """Enroll the face in view by name, rename it, delete it (after a confirmation): the
    gallery grid, the in-view list, GET /hash and the name drawn on the stream all follow."""
    live = await api.live_hash()
    await expect(in_view(page, live)).to_have_count(1)
    await wait_for_label(page, unknown=f"unknown {live[:8]}")
    # Its thumbnail is the worker's crop of the camera's frame, without the orange box the
    # stream has drawn around the face (issue 19: cut from the annotated stream).
    thumb = in_view(page, live).get_by_test_id("inview-crop")
    assert await natural_width(thumb) == 160
    async with api.session.get(api.url + f"/hash/{live}/crop") as resp:
        crop = cv2.imdecode(np.frombuffer(await resp.read(), np.uint8), cv2.IMREAD_COLOR)
    orange = np.all(np.abs(crop.astype(int) - UNKNOWN_COLOR) <= 25, axis=2)
    assert orange.mean() < 0.002, orange.mean()

    # Enroll from the live view.
    assert await api.steady_face() == live
    await page.get_by_test_id("enroll-name").fill("Ann Example")
    await page.get_by_test_id("enroll-email").fill("ann@example.org")
    await page.get_by_test_id("enroll-submit").click()
    await expect(message(page)).to_have_text("Added Ann Example.")
    await expect(page.get_by_test_id("enroll-name")).to_have_value("")
    ann = card(page, live)
    await expect(ann.get_by_test_id("face-name")).to_have_text("Ann Example")
    await expect(ann.get_by_test_id("face-meta")).to_contain_text("email on file")
    assert await natural_width(ann.get_by_test_id("face-thumb")) > 0
    await expect(in_view(page, live).get_by_test_id("inview-name")).to_have_text("Ann Example")
    await expect(in_view(page, live).get_by_test_id("not-button")).to_have_text("Not Ann Example")
    assert [(f["hash"], f["name"]) for f in await api.faces()] == [(live, "Ann Example")]
    await wait_for_label(page, known="Ann Example")

    # Rename inline.
    await ann.get_by_test_id("rename").click()
    field = ann.get_by_test_id("rename-input")
    await expect(field).to_be_focused()
    await expect(field).to_have_value("Ann Example")
    await field.fill("Zed Renamed-Person")
    await field.press("Enter")
    await expect(ann.get_by_test_id("face-name")).to_have_text("Zed Renamed-Person")
    await expect(field).to_be_hidden()
    await expect(in_view(page, live).get_by_test_id("inview-name")).to_have_text(
        "Zed Renamed-Person")
    state = await api.get("/hash")
    assert state["hash"] == live and state["name"] == "Zed Renamed-Person" and state["known"]
    await wait_for_label(page, known="Zed Renamed-Person")

    # Delete: cancelling the confirmation keeps the face; confirming removes it.
    await ann.get_by_test_id("delete").click()
    dialog = page.get_by_test_id("dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("Delete Zed Renamed-Person?")
    await page.get_by_test_id("dialog-cancel").click()
    await expect(dialog).to_be_hidden()
    await asyncio.sleep(0.3)
    assert len(await api.faces()) == 1
    await expect(ann).to_have_count(1)

    await ann.get_by_test_id("delete").click()
    await page.get_by_test_id("dialog-confirm").click()
    await expect(message(page)).to_have_text("Deleted Zed Renamed-Person.")
    await expect(ann).to_have_count(0)
    assert await api.faces() == []
    await expect(in_view(page, live).get_by_test_id("inview-name")).to_have_text(
        f"unknown {live[:8]}")
    await wait_for_label(page, unknown=f"unknown {live[:8]}")


async def test_api_errors_are_shown_on_the_page(page: Page, api: Api,
                                                no_face_png: bytes) -> None:
    """The server's {"error": ...} text appears on the page, one message at a time."""
    live = await api.steady_face()
    await api.enroll_live("Already Known")
    await expect(in_view(page, live).get_by_test_id("inview-name")).to_have_text("Already Known")
    await expect(page.get_by_test_id("enroll-face")).to_have_value("")  # no unknown face

    # Enrolling from the live view with nobody unknown in view: 422 from the server.
    await page.get_by_test_id("enroll-name").fill("Somebody")
    await page.get_by_test_id("enroll-submit").click()
    error = error_message(page)
    await expect(error).to_have_text(
        "Could not add Somebody: no unknown face in the live view to enroll")
    await expect(page.get_by_test_id("enroll-name")).to_have_value("Somebody")  # kept to retry

    # A photo without a face: 422 with another message, which replaces the first.
    await page.get_by_test_id("enroll-source-photo").check()
    await page.get_by_test_id("enroll-file").set_input_files(
        files=[{"name": "flag.png", "mimeType": "image/png", "buffer": no_face_png}])
    await page.get_by_test_id("enroll-submit").click()
    await expect(error).to_contain_text("Could not add Somebody: no face found in the image")
    await expect(page.get_by_test_id("notice").locator(".notice")).to_have_count(1)

    # "Not <name>", asking to remove the person's single sample: 409, nothing changed.
    await api.steady_face()
    await in_view(page, live).get_by_test_id("not-button").click()
    await page.get_by_test_id("not-remove").check()
    await page.get_by_test_id("dialog-confirm").click()
    await expect(error).to_contain_text("Could not correct Already Known: 'Already Known' has "
                                        "only this one sample")

    # Errors stay until dismissed.
    await page.get_by_role("button", name="Dismiss message").click()
    await expect(page.get_by_test_id("error")).to_have_count(0)
    assert [f["name"] for f in await api.faces()] == ["Already Known"]


async def test_samples_merge_and_not_this_person(page: Page, api: Api) -> None:
    """Enroll from a photo, add and delete samples on a card, merge one person into another,
    and correct a wrong match with "Not <name>"."""
    # Enroll Barack from a photo.
    await page.get_by_test_id("enroll-source-photo").check()
    await page.get_by_test_id("enroll-file").set_input_files(OBAMA)
    await page.get_by_test_id("enroll-name").fill("Barack")
    await page.get_by_test_id("enroll-submit").click()
    await expect(message(page)).to_have_text("Added Barack.")
    barack_hash = (await api.faces())[0]["hash"]
    barack = card(page, barack_hash)
    await expect(barack.get_by_test_id("samples-toggle")).to_have_text("Samples (1)")

    # Its samples: one, which cannot be deleted; upload a second, delete the first.
    await barack.get_by_test_id("samples-toggle").click()
    samples = barack.get_by_test_id("sample")
    await expect(samples).to_have_count(1)
    await expect(samples.get_by_test_id("sample-delete")).to_be_disabled()
    await barack.get_by_test_id("sample-upload").set_input_files(OBAMA2)
    await expect(message(page)).to_have_text("Added a sample to Barack.")
    await expect(samples).to_have_count(2)
    await expect(barack.get_by_test_id("samples-toggle")).to_have_text("Samples (2)")
    for img in await samples.locator("img").all():
        assert await natural_width(img) > 0
    first_id = await samples.first.get_attribute("data-id")
    await samples.first.get_by_test_id("sample-delete").click()
    await page.get_by_test_id("dialog-confirm").click()
    await expect(samples).to_have_count(1)
    await expect(samples.first).not_to_have_attribute("data-id", first_id or "")
    assert [s["source"] for s in (await api.faces())[0]["samples"]] == ["upload"]

    # A photo of somebody else is refused as Barack's sample: the 409 names the owner.
    await page.get_by_test_id("enroll-file").set_input_files(BIDEN)
    await page.get_by_test_id("enroll-name").fill("Joe")
    await page.get_by_test_id("enroll-submit").click()
    await expect(message(page)).to_have_text("Added Joe.")
    joe_hash = next(f["hash"] for f in await api.faces() if f["name"] == "Joe")
    await barack.get_by_test_id("sample-upload").set_input_files(BIDEN)
    await expect(error_message(page)).to_contain_text(
        re.compile(r"^Could not add a sample to Barack: .*Joe"))
    await page.get_by_test_id("error").get_by_role("button", name="Show Joe").click()
    await expect(page.get_by_test_id("error")).to_have_count(0)
    await expect(card(page, joe_hash)).to_have_class(re.compile(r"\bflash\b"))
    await expect(barack.get_by_test_id("sample")).to_have_count(1)

    # Enroll the face in view, then add a second live sample from its card.
    await page.get_by_test_id("enroll-source-live").check()
    live = await api.steady_face()
    await expect(page.get_by_test_id("enroll-face")).to_have_value(live)
    await page.get_by_test_id("enroll-name").fill("Alex")
    await page.get_by_test_id("enroll-submit").click()
    await expect(message(page)).to_have_text("Added Alex.")
    alex = card(page, live)
    await alex.get_by_test_id("samples-toggle").click()
    await api.steady_face()
    await alex.get_by_test_id("sample-live").click()
    await expect(message(page)).to_have_text("Added the face in view to Alex.")
    await expect(alex.get_by_test_id("sample")).to_have_count(2)

    # Merge Joe into Barack: pick Barack, confirm; Joe's card goes, Barack gets the sample.
    await card(page, joe_hash).get_by_test_id("merge").click()
    confirm = page.get_by_test_id("dialog-confirm")
    await expect(confirm).to_be_disabled()  # nobody picked yet
    await page.get_by_test_id("merge-target").select_option(barack_hash)
    await confirm.click()
    await expect(message(page)).to_have_text("Merged Joe into Barack.")
    await expect(card(page, joe_hash)).to_have_count(0)
    await expect(barack.get_by_test_id("sample")).to_have_count(2)
    assert sorted(f["name"] for f in await api.faces()) == ["Alex", "Barack"]

    # "Not Alex": shows the sample that made the match, and removes it as asked; Alex
    # keeps the other one (issue 19: it used to remove one unseen, of whatever was in view).
    face = in_view(page, live)
    await expect(face.get_by_test_id("not-button")).to_have_text("Not Alex")
    await api.steady_face()
    await face.get_by_test_id("not-button").click()
    await expect(page.get_by_test_id("dialog")).to_contain_text("Not Alex?")
    culprit = page.get_by_test_id("not-culprit")
    await expect(culprit).to_contain_text("Also remove this sample of Alex")
    assert await natural_width(culprit.locator("img")) > 0
    await page.get_by_test_id("not-remove").check()
    await page.get_by_test_id("dialog-confirm").click()
    await expect(message(page)).to_have_text(re.compile(
        r"^This face is not Alex: removed Alex's sample #\d+\.$"))
    await expect(alex.get_by_test_id("sample")).to_have_count(1)
    alex_samples = next(f["samples"] for f in await api.faces() if f["name"] == "Alex")
    assert len(alex_samples) == 1


async def test_email_search_finds_the_person(page: Page, api: Api) -> None:
    """An email in the search box asks the server (GET /faces?email=) and shows only that
    person; a name filters as you type (GET /faces?q=); "Show all" brings everyone
    back."""
    for photo, name, email in [(OBAMA, "Barack", "barack@example.org"),
                               (BIDEN, "Joe", "joe@example.org")]:
        await page.get_by_test_id("enroll-source-photo").check()
        await page.get_by_test_id("enroll-file").set_input_files(photo)
        await page.get_by_test_id("enroll-name").fill(name)
        await page.get_by_test_id("enroll-email").fill(email)
        await page.get_by_test_id("enroll-submit").click()
        await expect(message(page)).to_have_text(f"Added {name}.")
    cards = page.get_by_test_id("face-card")
    await expect(cards).to_have_count(2)

    search = page.get_by_test_id("search-input")
    await search.fill("JOE@example.org")  # emails are compared case-insensitively
    await search.press("Enter")
    result = page.get_by_test_id("search-result")
    await expect(result).to_have_text("JOE@example.org belongs to Joe.")
    await expect(cards.filter(visible=True)).to_have_count(1)
    await expect(cards.filter(visible=True).get_by_test_id("face-name")).to_have_text("Joe")

    await search.fill("nobody@example.org")
    await search.press("Enter")
    await expect(result).to_have_text("Nobody in the gallery has the email nobody@example.org.")
    await expect(cards.filter(visible=True)).to_have_count(0)

    await page.get_by_test_id("search-clear").click()
    await expect(cards.filter(visible=True)).to_have_count(2)
    await search.fill("bar")  # asked of the server (GET /faces?q=) once the typing pauses
    await expect(result).to_have_text("1 name containing “bar”")
    await expect(cards.filter(visible=True).get_by_test_id("face-name")).to_have_text(["Barack"])


async def test_gallery_is_paged(page: Page, api: Api) -> None:
    """30 people enrolled: the gallery shows the first 24 (in the order GET /faces lists
    them), says "page 1 of 2", and the next page has the other 6; the page stays short, and
    no wider than a phone on a phone."""
    hashes: list[str] = []
    for person in sorted(LFW.iterdir()):  # different people; a few photos show two faces
        if len(hashes) == 30:
            break
        status, body = await api.enroll_photo(lfw_photo(person.name), person.name)
        assert status in (201, 422), body
        if status == 201:
            hashes.append(body["hash"])
    assert len(hashes) == 30
    assert [f["hash"] for f in await api.faces()] == hashes  # enrollment order

    cards = page.get_by_test_id("face-card")
    shown = page.get_by_test_id("gallery-page")
    await expect(page.get_by_test_id("gallery-count")).to_have_text("(30)")
    await expect(shown).to_have_text("page 1 of 2")
    await expect(cards).to_have_count(CARDS_PER_PAGE)
    shown_hashes = "els => els.map(e => e.dataset.hash)"
    assert await cards.evaluate_all(shown_hashes) == hashes[:CARDS_PER_PAGE]
    await expect(page.get_by_test_id("gallery-prev")).to_be_disabled()
    # All 133 cards of a gallery on one page made it 9,000 px long; 24 are 4 rows here.
    assert await page.evaluate("document.scrollingElement.scrollHeight") < 3000

    await page.get_by_test_id("gallery-next").click()
    await expect(shown).to_have_text("page 2 of 2")
    await expect(cards).to_have_count(6)
    assert await cards.evaluate_all(shown_hashes) == hashes[CARDS_PER_PAGE:]
    await expect(page.get_by_test_id("gallery-next")).to_be_disabled()
    for thumb in await cards.get_by_test_id("face-thumb").all():
        assert await natural_width(thumb) > 0

    await page.set_viewport_size(PHONE)
    await page.get_by_test_id("gallery-prev").click()
    await expect(shown).to_have_text("page 1 of 2")
    await expect(cards).to_have_count(CARDS_PER_PAGE)
    assert await page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]


#: More people than GET /faces answers at once (200 at most): paging and searching them is the
#: server's work, never the page's.
CROWD = 230
MAX_FACES_PAGE = 200


async def facestream_cli(*args: str, cwd: Path) -> str:
    """``python -m facestream ARGS`` run to completion; its output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "facestream", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def fill_gallery(api: Api, data: Path, cwd: Path, names: list[str]) -> list[str]:
    """Enroll ``names`` on ``api``'s server (its gallery at ``data``), oldest first; their
    hashes. The first is enrolled from a real photo; the others are copies of it from
    ``faces export``, renamed and with embeddings moved apart, given to ``faces import``
    while the server runs (enrolling 230 photos would take minutes)."""
    first = await api.enroll(OBAMA, names[0])
    export = cwd / "one.json"
    await facestream_cli("faces", "export", str(export), "--data-dir", str(data), cwd=cwd)
    doc = json.loads(export.read_text())
    (real,) = doc["people"]
    embedding = np.frombuffer(base64.b64decode(real["samples"][0]["embedding"]), "<f4")
    rng = np.random.default_rng(7)
    copies = []
    for name in names[1:]:
        moved = embedding + rng.normal(0, 0.05, embedding.shape).astype("<f4")
        moved /= np.linalg.norm(moved)
        sample = {**real["samples"][0], "embedding": base64.b64encode(
            moved.astype("<f4").tobytes()).decode()}
        copies.append({**real, "hash": secrets.token_hex(32), "name": name,
                       "samples": [sample]})
    doc["people"] = copies
    crowd = cwd / "crowd.json"
    crowd.write_text(json.dumps(doc))
    out = await facestream_cli("faces", "import", str(crowd), "--data-dir", str(data),
                               cwd=cwd)
    assert f"imported {len(copies)} people, skipped 0" in out, out

    async def all_there() -> bool:  # the server notices another process's changes
        return (await api.get("/faces?limit=1"))["total"] == len(names)

    await api.wait_for(all_there, f"{len(names)} people in the server's gallery", timeout=10)
    return [first] + [c["hash"] for c in copies]


async def test_a_gallery_larger_than_a_page_is_paged_and_searched_by_the_server(
    browser: Browser, session: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """230 people: the gallery shows a page of them and how many there are; the search box
    finds the one person named "Lastcomer", enrolled last, through the server; the merge
    dialog's picker offers a few people and finds another by part of the name; merging
    shows the merged card on its page; and no GET /faces of the page asks for more than 200
    people, or leaves out how many it wants."""
    root = tmp_path_factory.mktemp("browser-crowd")
    server = Server(Path(os.devnull), root / "data", root, workers=1)
    try:
        await server.wait_ready(session)
        api = Api(server, session)
        names = [f"Crowd {i:03d}" for i in range(1, CROWD + 1)]
        names[119], names[-1] = "Yves Middlemarch", "Zelda Lastcomer"
        hashes = await fill_gallery(api, root / "data", root, names)
        yves, zelda = hashes[119], hashes[-1]

        asked: list[str] = []
        errors: list[str] = []
        page = await new_page(browser, errors)
        page.on("request", lambda r: asked.append(r.url) if r.method == "GET" else None)
        await page.goto(api.url + "/")
        cards = page.get_by_test_id("face-card")
        await expect(page.get_by_test_id("gallery-count")).to_have_text(f"({CROWD})")
        await expect(page.get_by_test_id("gallery-page")).to_have_text("page 1 of 10")
        await expect(cards).to_have_count(CARDS_PER_PAGE)
        assert await cards.evaluate_all("els => els.map(e => e.dataset.hash)") \
            == hashes[:CARDS_PER_PAGE]

        # The search box: the one name on the last page, found by the server.
        await page.get_by_test_id("search-input").fill("lastcomer")
        await expect(page.get_by_test_id("search-result")).to_have_text(
            "1 name containing “lastcomer”")
        await expect(cards).to_have_count(1)
        await expect(card(page, zelda).get_by_test_id("face-name")).to_have_text(
            "Zelda Lastcomer")

        # The merge dialog's picker: a few people at first, and more of them to type for.
        await card(page, zelda).get_by_test_id("merge").click()
        target = page.get_by_test_id("merge-target")
        people = target.locator("option:not([value=''])")
        await expect(target.locator("option[disabled]")).to_have_text(
            re.compile(r"^\d+ more: type a name to find them$"))
        assert 0 < await people.count() <= 20
        await page.get_by_test_id("merge-target-search").fill("iddlemar")
        await expect(people).to_have_text([f"Yves Middlemarch ({yves[:8]})"])
        await target.select_option(yves)
        await page.get_by_test_id("dialog-confirm").click()
        await expect(message(page)).to_have_text("Merged Zelda Lastcomer into Yves Middlemarch.")

        # Yves is not among the names searched for: the search is left for his page.
        await expect(card(page, yves)).to_have_class(re.compile(r"\bflash\b"))
        await expect(page.get_by_test_id("search-input")).to_have_value("")
        await expect(page.get_by_test_id("gallery-count")).to_have_text(f"({CROWD - 1})")
        await expect(page.get_by_test_id("gallery-page")).to_have_text("page 5 of 10")
        await page.context.close()
        assert not errors, errors

        lists = [parse_qs(urlsplit(url).query) for url in asked if urlsplit(url).path == "/faces"]
        assert any("q" in query for query in lists), asked  # searched by the server
        assert any("page_of" in query for query in lists), asked  # Yves's page, found there
        assert all("limit" in query and int(query["limit"][0]) <= MAX_FACES_PAGE
                   for query in lists), asked
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]


async def test_event_log_shows_arrivals_and_departures(
    visitors_page: Page, visitors_api: Api
) -> None:
    """Somebody arrives and leaves every 1.8 s: the log gets both, newest first, with times,
    as they happen."""
    page = visitors_page
    events = page.get_by_test_id("event")
    # Wait for an arrival and a departure pushed while the page is open.
    opened = time.time()
    deadline = time.monotonic() + 20
    seen: list[tuple[str, float]] = []
    while time.monotonic() < deadline:
        seen = await events.evaluate_all(
            "els => els.map(e => [e.dataset.event, Date.parse(e.querySelector('time')"
            ".getAttribute('datetime')) / 1000])")
        fresh = {kind for kind, at in seen if at >= opened - 1}
        if {"arrived", "left"} <= fresh:
            break
        await asyncio.sleep(0.2)
    kinds = [kind for kind, _ in seen]
    assert "arrived" in kinds and "left" in kinds, seen
    times = [at for _, at in seen]
    assert times == sorted(times, reverse=True), "the log is not newest first"
    newest = events.first
    await expect(newest.locator("time")).to_have_text(re.compile(r"\d{1,2}:\d{2}:\d{2}"))
    await expect(newest).to_contain_text(re.compile(r"unknown [0-9a-f]{8} (arrived|left)"))
    assert await events.count() <= 200


# -- visit history ----------------------------------------------------------------------------


def visit_rows(page: Page) -> Locator:
    return page.get_by_test_id("visit")


def visit_row(page: Page, visit_id: str) -> Locator:
    return page.locator(f'[data-testid=visit][data-id="{visit_id}"]')


async def shown_visits(page: Page) -> list[str]:
    """The ids of the visits the history shows, once it has loaded."""
    await expect(page.get_by_test_id("visits")).to_have_attribute("aria-busy", "false")
    return await visit_rows(page).evaluate_all("els => els.map(e => e.dataset.id)")


async def listed(api: Api, shown: list[str], loaded: float, **query: str) -> list[str]:
    """What GET /visits (with ``query``) lists from the page's first visit on: a page of
    them. Visits listed before that one must have arrived after the page loaded (at
    ``loaded``): the page showed the newest."""
    everything = await api.visits(**query)
    ids = [v["id"] for v in everything]
    start = ids.index(shown[0])
    assert all(v["arrived_at"] > loaded - ARRIVAL_LAG_S for v in everything[:start]), \
        "the page does not start with the newest visit"
    return ids[start:start + VISITS_PER_PAGE]


async def open_history(page: Page) -> float:
    """Switch to the history; returns when (before it loaded)."""
    loaded = time.time()
    await page.get_by_test_id("tab-history").click()
    await expect(page.get_by_test_id("tab-history")).to_have_attribute("aria-selected", "true")
    return loaded


async def test_history_lists_filters_and_pages_visits(
    visitors_page: Page, visitors_api: Api
) -> None:
    """The history lists visits newest first, 20 at a time, each with its face; "Older"
    shows the next 20 and "Newest" comes back; known / unknown, a person and a date range
    each narrow the list to exactly what GET /visits lists for them."""
    page, api = visitors_page, visitors_api
    angela = await api.enroll(lfw_photo(VISITORS[0]), "Angela")
    await api.finished_visit(angela)

    async def enough() -> bool:
        return len(await api.visits()) > VISITS_PER_PAGE

    await api.wait_for(enough, f"more than {VISITS_PER_PAGE} visits", timeout=60)

    loaded = await open_history(page)
    first = await shown_visits(page)
    assert len(first) == VISITS_PER_PAGE
    assert first == await listed(api, first, loaded)
    await expect(page.get_by_test_id("visits-page")).to_have_text("visits 1–20")
    await expect(page.get_by_test_id("visits-newest")).to_be_disabled()
    finished = visit_rows(page).locator(":scope:not([data-left=''])")
    assert await finished.count() >= VISITS_PER_PAGE - 2  # at most one in view (and leaving)
    for crop in await finished.get_by_test_id("visit-crop").all():
        assert await natural_width(crop) == 160  # the stored face crop
    for row in await finished.all():
        await expect(row.get_by_test_id("visit-duration")).to_have_text(re.compile(r"^\d+ s$"))

    # Older: the next 20 after the last one shown; Newest: back to the start.
    await page.get_by_test_id("visits-older").click()
    older = await shown_visits(page)
    ids = [v["id"] for v in await api.visits()]
    after = ids.index(first[-1]) + 1
    assert older == ids[after:after + VISITS_PER_PAGE]
    await expect(page.get_by_test_id("visits-page")).to_have_text(
        f"visits 21–{20 + len(older)}")
    await page.get_by_test_id("visits-newest").click()
    await expect(page.get_by_test_id("visits-page")).to_have_text("visits 1–20")
    await expect(page.get_by_test_id("visits-newest")).to_be_disabled()

    # Known people only: Angela's visits; unknown only: strangers'.
    loaded = time.time()
    await page.get_by_test_id("history-known").check()
    known = await shown_visits(page)
    assert known and known == await listed(api, known, loaded, known="true")
    await expect(visit_rows(page).get_by_test_id("visit-name")).to_have_text(
        ["Angela"] * len(known))
    loaded = time.time()
    await page.get_by_test_id("history-unknown").check()
    unknown = await shown_visits(page)
    assert unknown == await listed(api, unknown, loaded, known="false")
    assert not set(unknown) & set(known)
    for name in await visit_rows(page).get_by_test_id("visit-name").all_text_contents():
        assert re.fullmatch(r"unknown [0-9a-f]{8}", name), name

    # One person: everybody again, then Angela, found by part of her name (GET /faces?q=).
    await page.get_by_test_id("history-all").check()
    search = page.get_by_test_id("history-person-search")
    people = page.get_by_test_id("history-person").locator("option")
    await search.fill("nobody has this")
    await expect(people).to_have_text(["Everybody", "No name contains “nobody has this”"])
    await search.fill("GEL")
    await expect(people).to_have_text(["Everybody", "Angela"])
    loaded = time.time()
    await page.get_by_test_id("history-person").select_option(angela)
    person = await shown_visits(page)
    assert person == await listed(api, person, loaded, person=angela)
    assert set(await visit_rows(page).evaluate_all("els => els.map(e => e.dataset.hash)")) \
        == {angela}
    await expect(page.get_by_test_id("person-name")).to_have_text("Angela: every visit")

    # Dates, in the browser's time zone: up to yesterday, nothing; from today, all of them.
    today, yesterday, midnight = await page.evaluate("""() => {
        const day = new Date();
        day.setHours(0, 0, 0, 0);
        const before = new Date(day);
        before.setDate(day.getDate() - 1);
        const iso = (d) => [d.getFullYear(), d.getMonth() + 1, d.getDate()]
            .map((n) => String(n).padStart(2, "0")).join("-");
        return [iso(day), iso(before), day.getTime() / 1000];
    }""")
    await page.get_by_test_id("history-reset").click()
    async with page.expect_request(lambda r: "/visits?" in r.url) as request:
        await page.get_by_test_id("history-to").fill(yesterday)
    query = parse_qs(urlsplit((await request.value).url).query)
    assert float(query["until"][0]) == midnight and "since" not in query
    assert await shown_visits(page) == []
    await expect(page.get_by_test_id("visits-status")).to_have_text(
        "No visits match these filters.")
    await page.get_by_test_id("history-to").fill("")
    loaded = time.time()
    async with page.expect_request(lambda r: "/visits?" in r.url) as request:
        await page.get_by_test_id("history-from").fill(today)
    query = parse_qs(urlsplit((await request.value).url).query)
    assert float(query["since"][0]) == midnight and "until" not in query
    # The page settles on exactly what the API lists (a reload already under way when the
    # filter changed may be drawn first; new visits keep arriving meanwhile).
    deadline = time.monotonic() + 5
    while True:
        today_ids = await shown_visits(page)
        expected = await listed(api, today_ids, loaded, since=str(midnight))
        if today_ids == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert today_ids == expected


async def test_a_visit_opens_its_snapshot(visitors_page: Page, visitors_api: Api) -> None:
    """Clicking a visit in the history, or an arrival in the log, shows the visit's
    snapshot: the camera's frame, at its own size, with the visit's face boxed in it (LFW's
    photos have the face in their middle), and the visit's corrections."""
    page, api = visitors_page, visitors_api
    async def two() -> list[dict] | None:
        visits = await api.visits()
        return visits if len(visits) >= 2 else None

    visit = (await api.wait_for(two, "two visits"))[1]  # the newest may not be stored yet
    await open_history(page)
    row = visit_row(page, visit["id"])
    await row.get_by_test_id("visit-open").click()
    viewer = page.get_by_test_id("viewer")
    await expect(viewer).to_be_visible()
    await expect(page.get_by_test_id("viewer-title")).to_have_text(
        await row.get_by_test_id("visit-name").inner_text())
    snapshot = viewer.get_by_test_id("visit-snapshot")
    await expect(snapshot).to_have_attribute("src", f"/visits/{visit['id']}/snapshot")
    assert await natural_width(snapshot) == cv2.imread(str(lfw_photo(VISITORS[0]))).shape[1]
    picture = await snapshot.bounding_box()
    box = await viewer.get_by_test_id("snapshot-box").bounding_box()
    assert picture is not None and box is not None
    centre = ((box["x"] + box["width"] / 2 - picture["x"]) / picture["width"],
              (box["y"] + box["height"] / 2 - picture["y"]) / picture["height"])
    assert all(0.35 < c < 0.65 for c in centre), centre
    assert 0.15 < box["width"] / picture["width"] < 0.7
    await expect(viewer.get_by_test_id("viewer-is")).to_be_visible()
    await expect(viewer.get_by_test_id("viewer-new" if not visit["known"] else "viewer-not")
                 ).to_be_visible()
    await page.get_by_test_id("viewer-close").click()
    await expect(viewer).to_be_hidden()

    visit_id = await page.locator("[data-testid=event][data-event=arrived]").first \
        .get_attribute("data-visit")

    async def stored() -> bool:
        # The log shows an arrival as it happens; the history stores it a moment later.
        return any(v["id"] == visit_id for v in await api.visits())

    await api.wait_for(stored, f"the visit {visit_id} of the newest arrival to be stored")
    arrival = page.locator(f'[data-testid=event][data-event=arrived][data-visit="{visit_id}"]')
    await arrival.get_by_test_id("event-visit").click()
    await expect(viewer).to_be_visible()
    await expect(snapshot).to_have_attribute("src", f"/visits/{visit_id}/snapshot")
    assert await natural_width(snapshot) > 0


async def test_cards_say_when_each_person_was_last_seen(
    visitors_page: Page, visitors_api: Api
) -> None:
    """A person in view is "in view now"; once they leave their card says when, to the
    millisecond of their departure; somebody never in view is "never seen"."""
    page, api = visitors_page, visitors_api
    hugo = await api.enroll(lfw_photo(VISITORS[1]), "Hugo")
    barack = await api.enroll(OBAMA, "Barack")
    await expect(card(page, barack).get_by_test_id("face-seen")).to_have_text("never seen")
    seen = card(page, hugo).get_by_test_id("face-seen")
    await expect(seen).to_have_text("in view now")
    await expect(seen).to_have_text("last seen just now")
    left = await api.finished_visit(hugo)
    assert (await api.get(f"/faces/{hugo}"))["last_seen"] == left["left_at"]
    await expect(seen.locator("time")).to_have_attribute("datetime", js_iso(left["left_at"]))

    # A page opened now gets it from GET /faces.
    await page.reload()
    await expect(seen.locator("time")).to_have_attribute("datetime", js_iso(left["left_at"]))
    await expect(card(page, barack).get_by_test_id("face-seen")).to_have_text("never seen")


async def test_a_stranger_in_view_is_in_view_now_not_seen_at_their_arrival(
    visitors_page: Page, visitors_api: Api
) -> None:
    """Issue 19: an ongoing visit said "last seen" at its arrival. A stranger's card says
    "in view now" while a visit of theirs is under way, and when it ended once it has."""
    page, api = visitors_page, visitors_api
    await quiet_stranger(api)  # every visitor has been seen once: they all have cards

    async def in_view() -> str | None:
        return next((u["hash"] for u in (await api.get("/unknowns"))["unknowns"]
                     if u["in_view"]), None)

    stranger = await api.wait_for(in_view, "a stranger in view")
    await page.get_by_test_id("tab-unknowns").click()
    meta = page.locator(f'[data-testid=unknown-card][data-hash="{stranger}"]'
                        ).get_by_test_id("unknown-meta")
    await expect(meta).to_have_text(re.compile(r"^\d+ visits? · in view now$"))
    await expect(meta).to_have_text(re.compile(r"^\d+ visits? · last seen "), timeout=15_000)


async def test_the_arrivals_log_says_where_and_names_a_stranger_once_named(
    visitors_page: Page, visitors_api: Api
) -> None:
    """Issue 19: the arrivals log kept "unknown ..." after the stranger was named, and did
    not say which camera. Each entry says its camera; naming the stranger renames their
    entries in an open page."""
    page, api = visitors_page, visitors_api
    (camera,) = [c["name"] for c in (await api.get("/cameras"))["cameras"]]
    stranger = await quiet_stranger(api)
    entry = page.locator(f'[data-testid=event][data-hash="{stranger}"]').first
    await expect(entry.get_by_test_id("event-visit")).to_have_text(
        re.compile(rf"^unknown {stranger[:8]} (arrived|left)$"))
    await expect(entry.get_by_test_id("event-camera")).to_have_text(camera)
    status, body = await api.call("POST", "/faces",
                                  json={"from_unknown": stranger, "name": "Wanda Named"})
    assert status == 201, body
    await expect(entry.get_by_test_id("event-visit")).to_have_text(
        re.compile(r"^Wanda Named (arrived|left)$"))


async def quiet_stranger(api: Api, visits: int = 1) -> str:
    """A stranger who left 1.5-4 s ago: their departure is stored, and they are not back
    for another 2 s (each visitor is away 6.2 s). ``visits``: seen that many times."""

    async def quiet() -> str | None:
        now = time.time()
        return next((u["hash"] for u in (await api.get("/unknowns"))["unknowns"]
                     if 1.5 <= now - u["last_seen"] <= 4 and u["visits"] >= visits), None)

    return await api.wait_for(quiet, "a stranger who left a moment ago")


async def stranger_groups(api: Api) -> list[str]:
    """The strangers seen, once every visitor has been one (a fresh server: in 7.2 s)."""

    async def everyone() -> list[str] | None:
        groups = [u["hash"] for u in (await api.get("/unknowns"))["unknowns"]]
        return groups if len(groups) >= len(VISITORS) else None

    return await api.wait_for(everyone, "every visitor seen as a stranger")


async def test_naming_somebody_already_enrolled_shows_the_conflict(
    visitors_page: Page, visitors_api: Api
) -> None:
    """A stranger who is near-certainly somebody enrolled since cannot be named: the 409's
    message is shown, with a button to that person's card, and the stranger stays."""
    page, api = visitors_page, visitors_api
    groups = await stranger_groups(api)
    jacques = await api.enroll(lfw_photo(VISITORS[3]), "Jacques")
    # Which stranger was Jacques: his visits' snapshots are recognised as him now.
    group = None
    for stranger in groups:
        visit = (await api.visits(person=stranger))[-1]
        async with api.session.get(api.url + visit["snapshot"]) as resp:
            snapshot = await resp.read()
        form = aiohttp.FormData()
        form.add_field("frame", snapshot, filename="snapshot.jpg", content_type="image/jpeg")
        status, body = await api.call("POST", "/process-frame", data=form)
        if status == 200 and body["hash"] == jacques:
            group = stranger
    assert group is not None, "Jacques was never a stranger"

    await page.get_by_test_id("tab-unknowns").click()
    unknown = page.locator(f'[data-testid=unknown-card][data-hash="{group}"]')
    await unknown.get_by_role("button", name="Name this person").click()
    await page.get_by_test_id("dialog").get_by_label("Name").fill("Jacques Again")
    await page.get_by_test_id("dialog").get_by_label("Name").press("Enter")
    await expect(error_message(page)).to_have_text(
        f"Could not add unknown {group[:8]}: this face is already enrolled as 'Jacques'")
    assert [f["name"] for f in await api.faces()] == ["Jacques"]
    await expect(unknown).to_have_count(1)
    await page.get_by_test_id("error").get_by_role("button", name="Show Jacques").click()
    await expect(page.get_by_test_id("tab-gallery")).to_have_attribute("aria-selected", "true")
    await expect(card(page, jacques)).to_have_class(re.compile(r"\bflash\b"))


async def test_a_name_somebody_has_asks_whether_it_is_the_same_person(
    visitors_page: Page, visitors_api: Api
) -> None:
    """Issue 19, defect 4: naming a stranger with an enrolled person's name silently made a
    second person of that name, and merging them read "Merged Alex into Alex". The page asks
    whether it is the same person; "another person" enrolls them apart, and a rename to the
    name again, answered "the same person", merges them, saying which went into which."""
    page, api = visitors_page, visitors_api
    vera = await api.enroll(OBAMA, "Vera Visitor")
    stranger = await quiet_stranger(api)
    await page.get_by_test_id("tab-unknowns").click()
    unknown = page.locator(f'[data-testid=unknown-card][data-hash="{stranger}"]')
    await unknown.get_by_role("button", name="Name this person").click()
    dialog = page.get_by_test_id("dialog")
    await dialog.get_by_label("Name").fill("vera  VISITOR")
    await page.get_by_test_id("dialog-confirm").click()
    await expect(dialog).to_contain_text("Vera Visitor is enrolled already")
    choices = dialog.get_by_test_id("same-name").get_by_role("radio")
    await expect(choices).to_have_count(2)
    await expect(page.get_by_test_id("dialog-confirm")).to_be_disabled()  # nothing chosen
    assert [f["hash"] for f in await api.faces()] == [vera]  # nothing enrolled meanwhile
    await dialog.get_by_label("No, another person named Vera Visitor").check()
    await page.get_by_test_id("dialog-confirm").click()
    await expect(message(page)).to_have_text(re.compile(
        rf"^Added vera VISITOR to the gallery \(\d+ samples? from unknown {stranger[:8]}'s"))
    assert sorted((f["hash"], f["name"]) for f in await api.faces()) == sorted(
        [(vera, "Vera Visitor"), (stranger, "vera VISITOR")])

    await page.get_by_test_id("tab-gallery").click()
    named = card(page, stranger)
    await named.get_by_test_id("rename").click()
    await named.get_by_test_id("rename-input").fill("Vera Visitor")
    await named.get_by_test_id("rename-input").press("Enter")
    await dialog.get_by_label(re.compile(r"^Yes, the same person: Vera Visitor")).check()
    await page.get_by_test_id("dialog-confirm").click()
    await expect(message(page)).to_have_text(
        f"Merged vera VISITOR ({stranger[:8]}) into Vera Visitor ({vera[:8]}).")
    assert [(f["hash"], f["name"]) for f in await api.faces()] == [(vera, "Vera Visitor")]
    await expect(card(page, stranger)).to_have_count(0)


async def test_an_unknown_visitor_is_named(visitors_page: Page, visitors_api: Api) -> None:
    """A stranger seen before is a card under Unknown visitors; "Name this person" enrolls
    them under the name given, with the hash they had: the card moves to the gallery. The
    dialog lists their visits: one unticked (as if somebody else) stays a stranger's."""
    page, api = visitors_page, visitors_api
    # Named while away: a departure stored after the naming would make them a stranger
    # again (the history writer records a visit's "known" as it was when they left).
    stranger = await quiet_stranger(api, visits=2)
    await page.get_by_test_id("tab-unknowns").click()
    unknown = page.locator(f'[data-testid=unknown-card][data-hash="{stranger}"]')
    await expect(unknown.get_by_test_id("unknown-name")).to_have_text(f"unknown {stranger[:8]}")
    await expect(unknown.get_by_test_id("unknown-meta")).to_have_text(
        re.compile(r"^\d+ visits? · last seen "))
    assert await natural_width(unknown.get_by_test_id("unknown-crop")) == 160

    await unknown.get_by_role("button", name="Name this person").click()
    dialog = page.get_by_test_id("dialog")
    await expect(dialog).to_contain_text(f"Name unknown {stranger[:8]}")
    await expect(page.get_by_test_id("dialog-confirm")).to_be_disabled()  # no name yet
    await dialog.get_by_label("Name").fill("Vera Visitor")
    await dialog.get_by_label("Email").fill("vera@example.org")
    members = dialog.get_by_test_id("member-keep")
    assert await members.count() >= 2
    other = await members.first.get_attribute("value")
    await members.first.uncheck()
    await page.get_by_test_id("dialog-confirm").click()
    await expect(message(page)).to_have_text(re.compile(
        rf"^Added Vera Visitor to the gallery \(\d+ samples? from unknown {stranger[:8]}'s"))
    await expect(unknown).to_have_count(0)
    assert stranger not in {u["hash"] for u in (await api.get("/unknowns"))["unknowns"]}
    assert [(f["hash"], f["name"], f["has_email"]) for f in await api.faces()] == [
        (stranger, "Vera Visitor", True)]
    split = await api.get(f"/visits/{other}")
    assert not split["known"] and split["hash"] != stranger

    await page.get_by_test_id("tab-gallery").click()
    await expect(card(page, stranger).get_by_test_id("face-name")).to_have_text("Vera Visitor")


async def test_a_visit_names_a_stranger_and_adds_a_sample(
    visitors_page: Page, visitors_api: Api
) -> None:
    """In the history, "Name…" on a stranger's visit enrolls them from that visit's face (they
    keep their hash; their visits become the person's), and "Add to…" on another of their
    visits adds that face to them as a sample."""
    page, api = visitors_page, visitors_api
    stranger = await quiet_stranger(api)  # away for now (see test_an_unknown_visitor_is_named)

    async def two() -> list[dict] | None:
        done = [v for v in await api.visits(person=stranger) if v["left_at"] is not None]
        return done if len(done) >= 2 else None

    newest, older = (await api.wait_for(two, "two visits of one stranger"))[:2]
    await open_history(page)
    await shown_visits(page)
    await visit_row(page, newest["id"]).get_by_test_id("visit-enroll").click()
    dialog = page.get_by_test_id("dialog")
    await dialog.get_by_label("Name").fill("Nina Named")
    await page.get_by_test_id("dialog-confirm").click()
    await expect(message(page)).to_have_text(
        "Added Nina Named to the gallery (1 sample from this visit).")
    faces = await api.faces()
    assert [(f["hash"], f["name"], [x["source"] for x in f["samples"]]) for f in faces] == [
        (stranger, "Nina Named", ["history"])]
    row = visit_row(page, older["id"])
    await expect(row.get_by_test_id("visit-name")).to_have_text("Nina Named")
    await expect(row.get_by_test_id("visit-enroll")).to_have_count(0)  # known now

    await row.get_by_test_id("visit-add-sample").click()
    await expect(page.get_by_test_id("sample-target")).to_have_value(stranger)  # their own
    await page.get_by_test_id("dialog-confirm").click()
    await expect(message(page)).to_have_text(
        "Added the face of this visit to Nina Named; the visit is Nina Named's.")
    (face,) = await api.faces()
    assert face["hash"] == stranger and [x["source"] for x in face["samples"]] == [
        "history", "history"]


async def test_forget_history_keeps_the_person(visitors_page: Page, visitors_api: Api) -> None:
    """A card's History shows that person's timeline (day, time, duration, face); "Forget
    history" deletes every visit of theirs and leaves them enrolled."""
    page, api = visitors_page, visitors_api
    hugo = await api.enroll(lfw_photo(VISITORS[1]), "Hugo")
    await api.finished_visit(hugo)
    loaded = time.time()
    await card(page, hugo).get_by_test_id("face-history").click()
    await expect(page.get_by_test_id("tab-history")).to_have_attribute("aria-selected", "true")
    await expect(page.get_by_test_id("history-person")).to_have_value(hugo)
    await expect(page.get_by_test_id("person-name")).to_have_text("Hugo: every visit")
    timeline = await shown_visits(page)
    assert timeline and timeline == await listed(api, timeline, loaded, person=hugo)
    await expect(page.get_by_test_id("visits-day").first).to_have_text(
        await page.evaluate("() => new Date().toLocaleDateString([], "
                            "{weekday: 'long', year: 'numeric', month: 'long', day: 'numeric'})"))
    done = visit_rows(page).locator(":scope:not([data-left=''])").first
    await expect(done.get_by_test_id("visit-duration")).to_have_text(re.compile(r"^\d+ s$"))
    assert await natural_width(done.get_by_test_id("visit-crop")) == 160

    await page.get_by_test_id("forget-history").click()
    await expect(page.get_by_test_id("dialog")).to_contain_text("Forget Hugo's history?")
    async with page.expect_response(lambda r: r.request.method == "DELETE") as response:
        forgot_at = time.time()
        await page.get_by_test_id("dialog-confirm").click()
    body = await (await response.value).json()
    assert body["hash"] == hugo and body["deleted_visits"] >= len(timeline)
    await expect(message(page)).to_have_text(
        f"Forgot {body['deleted_visits']} visit{'' if body['deleted_visits'] == 1 else 's'} "
        "of Hugo.")
    for visit_id in timeline:
        await expect(visit_row(page, visit_id)).to_have_count(0)
    assert all(v["arrived_at"] > forgot_at - ARRIVAL_LAG_S  # only visits begun since
               for v in await api.visits(person=hugo))
    assert [f["hash"] for f in await api.faces()] == [hugo]
    await page.get_by_test_id("tab-gallery").click()
    await expect(card(page, hugo).get_by_test_id("face-name")).to_have_text("Hugo")


async def test_deleting_a_visit_removes_its_row(visitors_page: Page, visitors_api: Api) -> None:
    """Delete on a visit asks first, then the visit is gone from the list and the server."""
    page, api = visitors_page, visitors_api
    await open_history(page)
    await shown_visits(page)
    visit_id = await visit_rows(page).locator(":scope:not([data-left=''])").first \
        .get_attribute("data-id")
    assert visit_id
    # That row, by its id: ".first" would move to a newer visit ending meanwhile (the page
    # marks a departure in place), and the test would delete that one.
    row = visit_row(page, visit_id)
    who = await row.get_by_test_id("visit-name").inner_text()
    await row.get_by_test_id("visit-delete").click()
    await expect(page.get_by_test_id("dialog")).to_contain_text(f"Delete this visit of {who}?")
    await page.get_by_test_id("dialog-confirm").click()
    await expect(message(page)).to_have_text(re.compile(rf"^Deleted the visit of {who} at "))
    await expect(visit_row(page, visit_id)).to_have_count(0)
    assert (await api.call("GET", f"/visits/{visit_id}"))[0] == 404


async def within_phone_width(control: Locator) -> None:
    box = await control.bounding_box()
    assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= PHONE["width"]


async def drop_file(target: Locator, data: bytes, name: str, mime: str) -> None:
    """Drop a file onto ``target`` as a file dragged from the desktop arrives."""
    transfer = await target.page.evaluate_handle(
        """([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            return transfer;
        }""", [base64.b64encode(data).decode(), name, mime])
    await target.dispatch_event("drop", {"dataTransfer": transfer})


async def test_search_by_photo_says_who_it_is_and_shows_their_visits(
    visitors_page: Page, visitors_api: Api, no_face_png: bytes
) -> None:
    """Issue 19: a photo dropped on "Search by photo" shows who is in it and their latest
    visits, with the History tab filtered to them one click away: a stranger seen before
    as that stranger, and once they are enrolled by their name. On a phone's width a photo
    is picked instead, and one without a face says so."""
    page, api = visitors_page, visitors_api

    async def seen_before() -> tuple[Path, str] | None:
        """A visitor's photo, and the stranger the history has them as (a visitor named
        and deleted by an earlier test is a stranger again only after their next visit)."""
        for photo in map(lfw_photo, VISITORS):
            status, body = await api.call("POST", "/process-frame",
                                          data=upload("frame", photo))
            assert status == 200, body
            if body["unknown"]:
                return photo, body["unknown"]["hash"]
        return None

    photo, stranger = await api.wait_for(seen_before, "a visitor seen before")
    face = page.get_by_test_id("photo-face")

    async def search(photo: Path) -> list[str]:
        """Drop ``photo``; the ids of the visits shown for its one face."""
        await drop_file(page.get_by_test_id("photo-drop"), photo.read_bytes(), photo.name,
                        "image/jpeg")
        await expect(face).to_have_count(1)
        await expect(face.get_by_test_id("photo-visit").first).to_be_visible()
        return await face.get_by_test_id("photo-visit").evaluate_all(
            "rows => rows.map((row) => row.dataset.id)")

    shown = await search(photo)
    await expect(face).to_have_attribute("data-hash", stranger)
    await expect(face.get_by_test_id("photo-name")).to_have_text(f"unknown {stranger[:8]}")
    await expect(face.get_by_test_id("photo-about")).to_have_text(re.compile(
        r"^not enrolled; seen (once|\d+ times) before, (last .+|in view now) · similarity "
        r"(0\.\d\d|1\.00)$"))
    theirs = [v["id"] for v in await api.visits(person=stranger)]
    assert 1 <= len(shown) <= 3 and set(shown) <= set(theirs), (shown, theirs)
    # The face is cut from the photo dropped: the crop is drawn, edge to edge.
    assert await face.get_by_test_id("photo-face-crop").evaluate(
        "c => [0, 80, 159].every((at) => c.getContext('2d').getImageData(at, at, 1, 1)"
        ".data[3] === 255)")

    status, body = await api.call("POST", "/faces",
                                  json={"from_unknown": stranger, "name": "Photo Searched"})
    assert status == 201, body
    shown = await search(photo)
    await expect(face).to_have_attribute("data-hash", stranger)
    await expect(face.get_by_test_id("photo-name")).to_have_text("Photo Searched")
    await expect(face.get_by_test_id("photo-about")).to_have_text(
        re.compile(r"^enrolled · similarity (0\.\d\d|1\.00)$"))
    theirs = [v["id"] for v in await api.visits(person=stranger)]
    # Newest first (one more may have begun since the page asked).
    first = theirs.index(shown[0])
    assert first <= 1 and shown == theirs[first:first + len(shown)], (shown, theirs)
    await face.get_by_test_id("photo-all-visits").click()
    await expect(page.get_by_test_id("history-person")).to_have_value(stranger)
    await expect(page.get_by_test_id("person-name")).to_have_text(
        "Photo Searched: every visit")

    await page.set_viewport_size(PHONE)
    await page.get_by_test_id("photo-file").set_input_files(
        files=[{"name": "flag.png", "mimeType": "image/png", "buffer": no_face_png}])
    await expect(page.get_by_test_id("photo-status")).to_have_text(
        re.compile(r"^No result: no face found in the image"))
    await expect(face).to_have_count(0)
    await within_phone_width(page.get_by_test_id("photo-drop"))
    assert await page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]


async def test_the_views_fit_a_phone(visitors_page: Page, visitors_api: Api) -> None:
    """At 390 px wide nothing sticks out sideways, and the controls of the history and of
    the unknown visitors are within the screen's width."""
    page, api = visitors_page, visitors_api
    await quiet_stranger(api)
    await page.set_viewport_size(PHONE)
    await open_history(page)
    assert await shown_visits(page)
    for control in ("history-person", "history-from", "history-to", "visits-older"):
        await within_phone_width(page.get_by_test_id(control))
    await within_phone_width(visit_rows(page).first.get_by_test_id("visit-delete"))
    assert await page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]

    await page.get_by_test_id("tab-review").click()
    for control in ("review-show", "review-person", "review-camera", "review-older"):
        await within_phone_width(page.get_by_test_id(control))
    await within_phone_width(page.get_by_test_id("review-row").first.get_by_test_id("review-new"))
    assert await page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]

    await page.get_by_test_id("tab-unknowns").click()
    stranger = page.get_by_test_id("unknown-card").first
    await within_phone_width(stranger.get_by_test_id("unknown-enroll"))
    await within_phone_width(stranger.get_by_test_id("unknown-forget"))
    assert await page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]


async def test_login_page_then_the_dashboard_then_log_out(
    browser: Browser, session: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With accounts on (the default), the dashboard sends a stranger to the login page; the
    password the first start printed opens it with an HttpOnly, SameSite=Strict session."""
    root = tmp_path_factory.mktemp("browser-auth")
    server = Server(Path(os.devnull), root / "data", root, workers=1, auth=True)
    try:
        await server.wait_ready(session)
        printed = re.search(r"user 'admin', password (\S+)", server.log.read_text())
        assert printed is not None
        errors: list[str] = []
        page = await open_page(browser, server.url + "/", errors)
        await expect(page).to_have_url(server.url + "/login")
        await page.get_by_label("User name").fill("admin")
        await page.get_by_label("Password").fill("not the password")
        await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_test_id("login-error")).to_have_text(
            "wrong user name or password")
        await page.get_by_label("Password").fill(printed.group(1))
        await page.get_by_role("button", name="Log in").click()
        await expect(page).to_have_url(server.url + "/")
        await expect(page.get_by_test_id("account")).to_have_text("admin (admin)")
        cookie = next(c for c in await page.context.cookies()
                      if c["name"] == "facestream_session")
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"

        # A viewer sees no control only an admin may use (issue 19: every control showed,
        # and said so only after its confirmation dialog); the admin sees them all.
        admin = {"facestream_session": cookie["value"]}
        async with session.post(server.url + "/faces", cookies=admin,
                                data=upload("image", OBAMA, name="Barack")) as resp:
            assert resp.status == 201, await resp.text()
            barack = (await resp.json())["hash"]
        added = subprocess.run(
            [sys.executable, "-m", "facestream", "users", "--data-dir", str(root / "data"),
             "add", "vic", "--role", "viewer", "--password-stdin"],
            input="a long viewer password\n", capture_output=True, text=True, timeout=120,
            cwd=root, check=False)
        assert added.returncode == 0, added.stderr
        viewer = await open_page(browser, server.url + "/login", errors)
        await viewer.get_by_label("User name").fill("vic")
        await viewer.get_by_label("Password").fill("a long viewer password")
        await viewer.get_by_role("button", name="Log in").click()
        await expect(viewer.get_by_test_id("account")).to_have_text("vic (viewer)")
        for who, can in ((viewer, False), (page, True)):
            await who.reload()
            shown_card = card(who, barack)
            await expect(shown_card).to_be_visible()
            await shown_card.get_by_test_id("samples-toggle").click()
            for control in (who.get_by_test_id("enroll-form"),
                            *(shown_card.get_by_test_id(c) for c in
                              ("rename", "merge", "delete", "sample-live", "sample-delete"))):
                await (expect(control).to_be_visible() if can else
                       expect(control).to_be_hidden())
        await viewer.context.close()
        await page.get_by_test_id("logout").click()
        await expect(page).to_have_url(server.url + "/login")
        async with session.get(server.url + "/hash",
                               cookies={"facestream_session": cookie["value"]}) as resp:
            assert resp.status == 401  # the session ended with the logout
        assert errors == []
    finally:
        assert server.stop() == 0


def review_row(page: Page, visit_id: str) -> Locator:
    return page.locator(f'[data-testid=review-row][data-id="{visit_id}"]')


async def test_a_wrong_name_is_corrected_from_the_review_page_in_two_clicks(
        visitors_page: Page, visitors_api: Api) -> None:
    """Issue 19, defect 6: Hugo Chavez is named Angela (a photo of him is one of her
    samples). The review page lists his visit with its score, threshold and runner-up;
    "Not Angela", then the dialog's confirm, corrects it: two clicks. The dialog shows the
    sample behind the match; the visit becomes a stranger's and leaves the visits to
    review, and Hugo's photo is not named Angela any more. Two visits picked together are
    ignored at once."""
    page, api = visitors_page, visitors_api
    angela = await api.enroll(lfw_photo("Angela_Bassett"), "Angela")
    form = aiohttp.FormData()
    form.add_field("image", lfw_photo("Hugo_Chavez").read_bytes(), filename="hugo.jpg",
                   content_type="image/jpeg")
    status, body = await api.call("POST", f"/faces/{angela}/samples", data=form)
    assert status == 201, body
    wrong = body["id"]
    await api.enroll(lfw_photo("Ann_Veneman"), "Ann")  # a runner-up to show
    enrolled_at = time.time()

    async def hugo_named_angela() -> dict | None:
        """A finished visit named Angela that is Hugo's: her sample of him made the match
        (one that began after Ann was enrolled, so that she is its runner-up)."""
        for v in await api.visits(person=angela):
            if (v["left_at"] is not None and v["decision"] is not None
                    and v["arrived_at"] > enrolled_at):
                _, preview = await api.call("POST", f"/visits/{v['id']}/not",
                                            json={"dry_run": True})
                if preview["culprit"] and preview["culprit"]["id"] == wrong:
                    return v
        return None

    visit = await api.wait_for(hugo_named_angela, "Hugo's visit named Angela")
    await page.get_by_test_id("tab-review").click()
    row = review_row(page, visit["id"])
    await expect(row.get_by_test_id("review-name")).to_have_text("Angela")
    await expect(row.get_by_test_id("review-why")).to_have_text(
        re.compile(r"^score [01]\.\d\d · needs 0\.\d\d · next Ann -?0\.\d\d$"))

    await row.get_by_test_id("review-not").click()  # 1
    dialog = page.get_by_test_id("dialog")
    await expect(dialog.get_by_test_id("not-culprit")).to_contain_text(f"#{wrong}")
    await page.get_by_test_id("dialog-confirm").click()  # 2
    await expect(message(page)).to_have_text(re.compile(
        r"^The visit of Angela at [0-9:]+( [AP]M)?: not Angela\.$"))
    await expect(row).to_have_count(0)  # reviewed: no longer to review
    after = (await api.get(f"/visits/{visit['id']}"))
    assert (after["known"], after["name"]) == (False, None) and after["reviewed_at"]
    form = aiohttp.FormData()
    form.add_field("frame", lfw_photo("Hugo_Chavez").read_bytes(), filename="hugo.jpg",
                   content_type="image/jpeg")
    status, found = await api.call("POST", "/process-frame", data=form)
    assert status == 200 and found["name"] != "Angela"
    assert wrong in [s["id"] for s in (await api.get(f"/faces/{angela}"))["samples"]]

    rows = page.get_by_test_id("review-row")
    picked = [await rows.nth(i).get_attribute("data-id") for i in range(2)]
    for vid in picked:
        await review_row(page, vid).get_by_test_id("review-pick").check()
    await expect(page.get_by_test_id("review-picked")).to_have_text("2 visits picked")
    await page.get_by_test_id("review-bulk-ignore").click()
    await expect(message(page)).to_have_text("2 visits: ignored.")
    for vid in picked:
        await expect(review_row(page, vid)).to_have_count(0)
        assert (await api.get(f"/visits/{vid}"))["reviewed_at"] is not None


async def video_clients(api: Api) -> float:
    async with api.session.get(api.url + "/metrics") as resp:
        text = await resp.text()
    return next(float(line.split()[1]) for line in text.splitlines()
                if line.startswith("facestream_video_clients "))


async def test_the_h264_view_plays_with_the_names_drawn_over_the_face(
        browser: Browser, api: Api) -> None:
    """Issue 20: by default the page plays the camera's H.264 (frames presented, near the
    live edge), downloads no MJPEG beside it, a second page joining starts within 2 s,
    draws the face's box and label over the face from the faces sent with each frame, and
    a hidden tab stops receiving video."""
    errors: list[str] = []
    page = await open_page(browser, api.url + "/", errors)
    try:
        video = page.get_by_test_id("video")
        await expect(video).to_be_visible()
        await wait_for_js(video, "v => Number(v.dataset.frames) >= 10")
        assert await page.get_by_test_id("stream").get_attribute("src") is None
        before = int(await video.get_attribute("data-frames") or 0)
        await asyncio.sleep(1.0)
        after = int(await video.get_attribute("data-frames") or 0)
        # Playing, not a still (the rate, 25 fps when the machine is not shared with a test
        # suite, is the benchmark's to measure).
        assert after - before >= 5, (before, after)
        lag = await page.evaluate(
            "() => { const v = document.getElementById('video');"
            " return v.buffered.end(v.buffered.length - 1) - v.currentTime; }")
        assert lag < 1.0

        overlay = page.get_by_test_id("overlay")
        await wait_for_js(overlay, "c => JSON.parse(c.dataset.faces || '[]').length > 0")
        (face,) = json.loads(await overlay.get_attribute("data-faces") or "[]")
        x, y, w, h = face["box"]
        assert face["label"] == "unknown"  # nobody enrolled
        assert 0.3 < x + w / 2 < 0.7 and 0.2 < y + h / 2 < 0.7 and w > 0.15, face

        async def one_viewer() -> bool:
            return await video_clients(api) == 1

        # One video connection for the page (a player that reconnected under load may have
        # left one the server has yet to see closed).
        await api.wait_for(one_viewer, "the page's one video connection", timeout=10)
        # A second viewer joining mid-stream: its first picture within 2 s of asking.
        other = await open_page(browser, api.url + "/", errors)
        joined = other.get_by_test_id("video")
        started = await wait_for_js(joined, "v => Number(v.dataset.startMs || 0)")
        assert started < 2000, started
        await other.context.close()
        # The other view, chosen under the picture, is remembered in this browser.
        await expect(page.get_by_test_id("video-mode-text")).to_have_text("H.264")
        await page.get_by_test_id("video-mode-switch").click()
        stream = page.get_by_test_id("stream")
        await expect(stream).to_be_visible()
        await expect(video).to_be_hidden()
        await wait_for_js(stream, "img => img.complete && img.naturalWidth > 0")

        async def stopped() -> bool:
            return await video_clients(api) == 0

        await api.wait_for(stopped, "the video to stop for MJPEG", timeout=5)
        await page.reload()
        await expect(page.get_by_test_id("video-mode-text")).to_have_text("MJPEG")
        await expect(stream).to_be_visible()
        await page.get_by_test_id("video-mode-switch").click()
        await wait_for_js(video, "v => Number(v.dataset.frames) >= 5")
        await expect(stream).to_be_hidden()
        await page.evaluate(
            "() => { for (const [k, v] of [['hidden', true], ['visibilityState', 'hidden']])"
            " Object.defineProperty(document, k, {value: v, configurable: true});"
            " document.dispatchEvent(new Event('visibilitychange')); }")

        await api.wait_for(stopped, "the hidden tab's video to stop", timeout=5)
    finally:
        await page.context.close()
    assert not errors, errors


async def test_a_viewer_on_a_slow_link_stays_live_on_the_low_tier(
        browser: Browser, api: Api) -> None:
    """Issue 20: a phone on a slow mobile link (Chromium's network emulation: 1 Mbit/s,
    100 ms each way, the browser's own buffers taking whatever comes, as a mobile network's
    do), where the full tier (2 Mbit/s) does not fit. The page moves to the low tier and
    its picture stays live, at most about a second behind the camera, playing, instead of
    falling further behind every second."""
    errors: list[str] = []
    page = await new_page(browser, errors)
    try:
        cdp = await page.context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": 100, "downloadThroughput": 1_000_000 / 8,
            "uploadThroughput": 1_000_000 / 8})
        # Not waiting for "load": should the video fail and the page fall back to MJPEG
        # before it, "load" never comes (the MJPEG response never ends), and the wait below
        # says what is wrong instead of the navigation timing out (seen once in CI).
        await page.goto(api.url + "/", wait_until="domcontentloaded")
        video = page.get_by_test_id("video")
        await wait_for_js(video, "v => v.dataset.tier === 'low' && Number(v.dataset.frames) > 25",
                          timeout=15)
        await asyncio.sleep(2.0)  # what the full tier left on the way is played or dropped
        read = "v => [Number(v.dataset.frames), Number(v.dataset.last), v.dataset.tier]"
        frames0, _, _ = await video.evaluate(read)
        lags = []
        for _ in range(5):
            await asyncio.sleep(0.5)
            frames, lag, tier = await video.evaluate(read)
            lags.append(lag)
            assert tier == "low"
        # Live: each picture about a second at most after its capture (here: 0.6 s), and
        # still playing (25 fps when the machine is not shared with a test suite).
        assert max(lags) < 1.5, lags
        assert frames - frames0 >= 12, (frames0, frames)
    finally:
        await page.context.close()
    assert not errors, errors
