"""``python -m facestream`` as a user starts it: a process on a free loopback port, its log
in a file, stopped by SIGTERM. For tests of what only a process shows: its log from start to
exit, signals, workers left behind, several nodes, and the browser tests."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from .conftest import free_port, stop_process


class Server:
    """``source`` None: the cameras of ``cwd``'s config.toml. Accounts are off unless
    ``auth``; ``extra``: more arguments."""

    def __init__(self, source: Path | str | None, data_dir: Path | str, cwd: Path,
                 workers: int = 2, auth: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"server-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "facestream",
                 *(() if source is None else ("--source", str(source))), "--port",
                 str(self.port), "--data-dir", str(data_dir), "--workers", str(workers),
                 *(() if auth else ("--no-auth",)), *extra],
                cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy(),
            )

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 60) -> None:
        """Until /healthz answers 200 (AssertionError with the log if the process exits)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._alive()
            try:
                async with session.get(self.url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"server did not become ready: {self.tail()}")

    def wait_ready_blocking(self, timeout: float = 90) -> None:
        """``wait_ready`` for a test without an event loop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._alive()
            try:
                self.get("/healthz")
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"server did not become ready: {self.tail()}")

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited: {self.log.read_text()}")

    # -- reading it (blocking) --------------------------------------------------------------

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            body: bytes = resp.read()
            return body

    def camera(self) -> dict[str, Any]:
        camera: dict[str, Any] = json.loads(self.get("/healthz"))["camera"]
        return camera

    def frames_captured(self) -> float:
        for line in self.get("/metrics").decode().splitlines():
            if line.startswith("facestream_frames_captured_total "):
                return float(line.split()[1])
        raise AssertionError("no facestream_frames_captured_total in /metrics")

    def wait_frames(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.frames_captured() < count:
            assert time.monotonic() < deadline, self.tail()
            time.sleep(0.1)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text()[-chars:]

    def lines(self, text: str) -> list[str]:
        """The log's lines holding ``text``."""
        return [line for line in self.log.read_text().splitlines() if text in line]

    def wait_lines(self, text: str, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines(text)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} lines with {text!r}: {self.tail()}")
            time.sleep(0.1)

    def stop(self) -> int:
        """SIGTERM, then its exit code (-9 if it had to be killed)."""
        return stop_process(self.proc)
