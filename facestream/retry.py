"""Retrying what fails: the waits between attempts, and the log lines an outage deserves.

Every part that reconnects or retries (camera reads, the history writer, MQTT, webhooks, the
PostgreSQL follower, the gallery watcher) uses these two, so they all behave alike: waits
double from a first to a last, and an outage is logged when it starts (or its reason
changes) and when it ends, never once per attempt.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any


class Backoff:
    """Waits between attempts: ``first``, doubling up to ``last``, each spread by
    +-``jitter`` (a fraction) so that many clients of one server do not retry in step.
    ``reset()`` after a success starts again from ``first``."""

    def __init__(self, first: float, last: float, jitter: float = 0.0) -> None:
        if not 0 < first <= last:
            raise ValueError(f"backoff needs 0 < first <= last, got {first}, {last}")
        self.first, self.last, self.jitter = first, last, jitter
        self._next = first

    @property
    def upcoming(self) -> float:
        """The wait ``next()`` will give (before jitter), to say it in a message."""
        return self._next

    def next(self) -> float:
        """The wait before the next attempt; the one after it is twice as long."""
        delay = self._next
        self._next = min(delay * 2, self.last)
        if self.jitter:
            delay *= random.uniform(1 - self.jitter, 1 + self.jitter)
        return min(delay, self.last)

    def reset(self) -> None:
        self._next = self.first


class Outage:
    """Logs a run of failures once: when it starts (or its reason changes: pass ``reason``)
    and when it ends. Counts the failures and remembers when the run began."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._reason: str | None = None
        #: time.monotonic() of the first failure of the current run; None while working.
        self.since: float | None = None
        #: Failures in the current run.
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.since is not None

    def failed(self, level: int, message: str, *args: Any, reason: str = "",
               exc_info: bool = False) -> bool:
        """Count a failure; log ``message % args`` at ``level`` (with the current exception's
        traceback if ``exc_info``) if it starts a run or its ``reason`` differs from the last
        one's. True if it was logged."""
        self.failures += 1
        news = self.since is None or reason != self._reason
        if self.since is None:
            self.since = time.monotonic()
        self._reason = reason
        if news:
            self._log.log(level, message, *args, exc_info=True if exc_info else None)
        return news

    def recovered(self, level: int, message: str, *args: Any) -> bool:
        """End the run: log ``message % args`` at ``level`` if there was one. True if it
        was logged."""
        if self.since is None:
            return False
        self.clear()
        self._log.log(level, message, *args)
        return True

    def clear(self) -> None:
        """End the run without a line (the caller says so in its own words)."""
        self.since, self._reason, self.failures = None, None, 0


__all__ = ["Backoff", "Outage"]
