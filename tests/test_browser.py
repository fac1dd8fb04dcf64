"""The dashboard at GET / in a real headless Chromium, against `python -m facestream` on a
real video: what a person curating the gallery sees and clicks.

Needs the `playwright` package and Debian's Chromium (see tests/browser_helpers.py). A missing
one fails the run instead of skipping it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest
import pytest_asyncio

# browser_helpers imports playwright, and says what to install when it is missing.
from .browser_helpers import (
    DESKTOP,
    KNOWN_COLOR,
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
)
from .conftest import BIDEN, OBAMA, OBAMA2, TALKING_HEAD
from .test_e2e import Server

# One server and one browser for the module; every test gets a fresh page and empty gallery.
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


class Api:
    """Direct HTTP calls, to arrange state and to check what the page did."""

    def __init__(self, server: Server, session: aiohttp.ClientSession) -> None:
        self.url = server.url
        self.session = session

    async def get(self, path: str) -> dict:
        async with self.session.get(self.url + path) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def faces(self) -> list[dict]:
        return (await self.get("/faces"))["faces"]

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


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def talking_head(
    session: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    """The server on an 8 s clip of one person talking, looping: a face is always in view."""
    tmp = tmp_path_factory.mktemp("browser")
    async for server in _serving(session, Server(TALKING_HEAD, tmp / "data", tmp)):
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def coming_and_going(
    session: aiohttp.ClientSession,
    tmp_path_factory: pytest.TempPathFactory,
    face_then_empty_video: Path,
) -> AsyncIterator[Server]:
    """The server on 3 s of a face, then 3 s of nobody, looping."""
    tmp = tmp_path_factory.mktemp("browser-events")
    server = Server(face_then_empty_video, tmp / "data", tmp, workers=1)
    async for running in _serving(session, server):
        yield running


async def _serving(session: aiohttp.ClientSession, server: Server) -> AsyncIterator[Server]:
    """Yield ``server`` once it answers; afterwards it must have shut down cleanly."""
    try:
        await server.wait_ready(session)
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()[-3000:]


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


async def open_page(browser: Browser, url: str, errors: list[str]) -> Page:
    context = await browser.new_context(viewport=DESKTOP)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url)
    return page


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser, api: Api) -> AsyncIterator[Page]:
    """The dashboard, opened after the gallery was emptied. Fails on any uncaught JS error."""
    errors: list[str] = []
    page = await open_page(browser, api.url + "/", errors)
    await expect(page.get_by_test_id("connection")).to_have_text("live")
    yield page
    await page.context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


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
    """The <img> shows the live MJPEG (frames change), comes back by itself after the stream
    fails, and the in-view list shows the face the server sees, labelled as unknown."""
    refused: list[str] = []

    async def fail_first_stream(route: Route) -> None:
        if not refused:
            refused.append(route.request.url)
            await route.abort()
        else:
            await route.continue_()

    errors: list[str] = []
    context = await browser.new_context(viewport=DESKTOP)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.route("**/streaming*", fail_first_stream)
    try:
        await page.goto(api.url + "/")
        status = page.get_by_test_id("stream-status")
        await expect(status).to_contain_text("reconnecting")
        await page.wait_for_function(
            "document.querySelector('[data-testid=stream]').naturalWidth > 0"
        )
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
        await context.close()
    assert not errors, errors


async def test_enroll_rename_and_delete_from_the_page(page: Page, api: Api) -> None:
    """Enroll the face in view by name, rename it, delete it (after a confirmation): the
    gallery grid, the in-view list, GET /hash and the name drawn on the stream all follow."""
    live = await api.live_hash()
    await expect(in_view(page, live)).to_have_count(1)
    await wait_for_label(page, unknown=f"unknown {live[:8]}")

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

    # "Not <name>" when the identity has a single sample: 409, nothing removed.
    await api.steady_face()
    await in_view(page, live).get_by_test_id("not-button").click()
    await page.get_by_test_id("dialog-confirm").click()
    await expect(error).to_contain_text("Could not correct Already Known: 'Already Known' has "
                                        "only this one sample")

    # Errors stay until dismissed.
    await page.get_by_role("button", name="Dismiss message").click()
    await expect(page.get_by_test_id("error")).to_have_count(0)
    assert [f["name"] for f in await api.faces()] == ["Already Known"]


async def test_samples_merge_and_not_this_person(page: Page, api: Api) -> None:
    """Enroll from a photo, add and delete samples on a card, merge one identity into another,
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

    # "Not Alex": removes the live sample that matched; Alex keeps the other one.
    face = in_view(page, live)
    await expect(face.get_by_test_id("not-button")).to_have_text("Not Alex")
    await api.steady_face()
    await face.get_by_test_id("not-button").click()
    await expect(page.get_by_test_id("dialog")).to_contain_text("Not Alex?")
    await page.get_by_test_id("dialog-confirm").click()
    await expect(message(page)).to_contain_text("from Alex.")
    await expect(alex.get_by_test_id("sample")).to_have_count(1)
    alex_samples = next(f["samples"] for f in await api.faces() if f["name"] == "Alex")
    assert len(alex_samples) == 1


async def test_email_search_finds_the_identity(page: Page, api: Api) -> None:
    """An email in the search box asks the server (GET /faces?email=) and shows only that
    identity; a name filters as you type; "Show all" brings everyone back."""
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
    await search.fill("bar")
    await expect(cards.filter(visible=True).get_by_test_id("face-name")).to_have_text("Barack")


async def test_event_log_shows_arrivals_and_departures(
    browser: Browser, coming_and_going: Server
) -> None:
    """The face in the clip arrives and leaves every 6 s: the log gets both, newest first,
    with times, as they happen."""
    errors: list[str] = []
    page = await open_page(browser, coming_and_going.url + "/", errors)
    try:
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
    finally:
        await page.context.close()
    assert not errors, errors
