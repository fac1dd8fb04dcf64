"""Helpers for the browser tests: launching Debian's Chromium, reading the stream the page
shows, and measuring the name label the server draws into it.

Playwright drives the system Chromium (``apt-get install chromium``); ``playwright install``
is never needed. Set FACESTREAM_CHROMIUM to use another Chromium binary.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from facestream.overlay import KNOWN_COLOR, UNKNOWN_COLOR, label_font_size, label_patch

try:
    from playwright.async_api import (
        Browser,
        ConsoleMessage,
        Locator,
        Page,
        Playwright,
        Route,
        async_playwright,
        expect,
    )
except ImportError as exc:  # fail the run, never skip: CI must install it
    raise ImportError(
        "the browser tests need the 'playwright' Python package (pip install playwright) and "
        "Debian's Chromium (apt-get install -y chromium); never run 'playwright install'"
    ) from exc

CHROMIUM = Path(os.environ.get("FACESTREAM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}

__all__ = [
    "KNOWN_COLOR", "UNKNOWN_COLOR", "Browser", "Locator", "Page", "Route", "async_playwright",
    "expect",
]


async def launch_chromium(playwright: Playwright) -> Browser:
    if not CHROMIUM.exists():
        raise AssertionError(
            f"Chromium not found at {CHROMIUM}: apt-get install -y chromium "
            "(or set FACESTREAM_CHROMIUM)"
        )
    return await playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )


#: Run in every document before its own scripts: reports each Content-Security-Policy
#: violation (an inline script or style, eval, a source the policy does not allow) to
#: the test through the binding named here.
_CSP_REPORTER = "__reportCspViolation"
_CSP_WATCH = f"""
document.addEventListener("securitypolicyviolation", (ev) => {{
    window.{_CSP_REPORTER}(`${{ev.violatedDirective}} refused ${{ev.blockedURI || "(inline)"}}`
        + ` at ${{ev.sourceFile || ev.documentURI}}:${{ev.lineNumber}}: ${{ev.sample}}`);
}});
"""


async def watch_for_errors(page: Page, errors: list[str]) -> None:
    """Append to ``errors`` every uncaught error in ``page`` and every violation of its
    Content-Security-Policy (the event, and Chromium's console message, which also names
    what was refused), from now on and across navigations."""
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def console(msg: ConsoleMessage) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            errors.append(f"console: {msg.text}")

    page.on("console", console)
    await page.expose_function(_CSP_REPORTER, lambda text: errors.append(f"CSP violation: {text}"))
    await page.add_init_script(_CSP_WATCH)


async def wait_for_js(target: Page | Locator, function: str, arg: Any = None,
                      timeout: float = 15) -> Any:
    """Poll ``target.evaluate(function, arg)`` until it returns something true, and return
    that. (Page.wait_for_function compiles its expression with eval in the page, which the
    page's Content-Security-Policy rightly refuses.)"""
    deadline = time.monotonic() + timeout
    while True:
        if result := await target.evaluate(function, arg):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {function}")
        await asyncio.sleep(0.1)


async def stream_frame(page: Page) -> NDArray[np.uint8] | None:
    """The frame the page's <img data-testid=stream> shows right now, as BGR pixels."""
    data_url = await page.evaluate(
        """() => {
            const img = document.querySelector('[data-testid=stream]');
            if (!img.complete || !img.naturalWidth) return null;
            const canvas = document.createElement('canvas');
            canvas.width = img.naturalWidth;
            canvas.height = img.naturalHeight;
            canvas.getContext('2d').drawImage(img, 0, 0);
            return canvas.toDataURL('image/png');
        }"""
    )
    if data_url is None:
        return None
    png = base64.b64decode(data_url.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def label_width(frame: NDArray[np.uint8], color: tuple[int, int, int],
                tolerance: int = 45) -> int | None:
    """Width in pixels of the filled name label drawn in ``color``, or None if there is none.

    The label is a filled rectangle with black text in it; the face box is an outline of the
    same colour. Rows that are mostly ``color`` between their first and last such pixel belong
    to the label (or to the box's top edge, one or two rows); the median of their extents is
    the label's width.
    """
    diff = np.abs(frame.astype(np.int16) - np.array(color, np.int16)).max(axis=2)
    mask = diff <= tolerance
    extents = []
    for row in mask:
        xs = np.flatnonzero(row)
        if len(xs) < 8:
            continue
        extent = int(xs[-1] - xs[0] + 1)
        if len(xs) / extent >= 0.55:
            extents.append(extent)
    if len(extents) < 4:
        return None
    return int(np.median(extents))


def expected_label_width(label: str, frame_width: int) -> int:
    """The width annotate() gives the label of ``label`` on a frame ``frame_width`` wide."""
    return int(label_patch(label, KNOWN_COLOR, label_font_size(frame_width)).shape[1])


async def natural_width(image: Locator) -> int:
    """0 until the <img> has decoded a picture (a broken or missing image stays 0)."""
    await expect(image).to_have_js_property("complete", True)
    return int(await image.evaluate("img => img.naturalWidth"))
