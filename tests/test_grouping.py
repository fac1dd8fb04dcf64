"""Strangers grouped across visits (issue 19's target): on a clip of eight strangers each
showing two different photos minutes apart, two of them side by side at the end, no group
holds two people, two faces in one frame never share a hash, and at least 6 of 8 people's
two photos land in one group.

The clip (tests/strangers_clip.py: real LFW photos, faces about 80 px on a 640x480 frame)
is played through the server's own camera Presence, worker pool and History, at the
frames' capture times: a person's second photo comes two minutes after the first in the
clip's timeline (the tracker has long forgotten them), in seconds of wall time. Eight other
LFW people are enrolled first, as in a gallery in use. ``bench/grouping_benchmark.py``
plays the same clip for other choices of people.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from facestream.appkeys import CAMERAS, HISTORY, POOL
from facestream.config import Config

from .conftest import upload
from .strangers_clip import SLOT_S, pick_strangers, play, strangers_clip


async def test_eight_strangers_seen_twice_minutes_apart_are_grouped_never_mixed(
        app_client: Any, config_factory: Callable[..., Config]) -> None:
    config = config_factory()
    client = await app_client(config, live=False)
    app = client.server.app
    clip = strangers_clip(seed=0)
    assert len(clip.people) * SLOT_S >= 120  # a person's two photos are minutes apart
    for other in pick_strangers(8, seed=1000, exclude=frozenset(p.name for p in clip.people)):
        form = upload("image", other.photos[0], name=other.name.replace("_", " "))
        resp = await client.post("/faces", data=form)
        assert resp.status == 201, await resp.text()
    history = app[HISTORY]
    outcome = await play(clip, app[CAMERAS].first.presence, app[POOL], history._queue.join,
                         config.camera.min_face_px)
    report = outcome.report()
    # Every face seen was on a photo, and the side-by-side end was seen as two faces.
    assert outcome.stray == 0 and outcome.crowded >= 5, report
    assert outcome.mixed() == {}, report
    assert outcome.shared == [], report
    together = outcome.together()
    assert len(together) >= 6, report
    # ... and History holds them so: each of those people is one stranger with both visits.
    body = await (await client.get("/unknowns?limit=200")).json()
    visits = {u["hash"]: u["visits"] for u in body["unknowns"]}
    for person, name in enumerate(outcome.people):
        if name in together:
            assert visits.get(outcome.hash_of(person, 0), 0) >= 2, (name, report)
