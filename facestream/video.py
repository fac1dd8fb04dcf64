"""H.264 live video: each camera's frames encoded once per tier, for every video viewer on
that tier, only while there is one.

MJPEG sends every viewer a full JPEG per frame (about 130 KB at 1280x720, 26 Mbit/s at 25 fps);
H.264 carries the same picture in 1-3 Mbit/s. A camera's ``VideoStream`` reads the clean
frames (no boxes drawn) from its FrameHub and encodes them (mp4.py: libx264 into
fragmented MP4, one fragment per frame), which browsers play through Media Source
Extensions and players such as VLC or ffplay read as it comes. Encoding runs in a worker
thread and only while a viewer is connected: with none, nothing is encoded.

There are two tiers: the full one (``video.bitrate_kbps``, ``video.max_side``) and a low one
for links that cannot carry it (``video.low_bitrate_kbps``, ``video.low_max_side``), each
encoded only while somebody is on it. Each viewer (``Viewer``) gets its tier's init segment,
then fragments from a keyframe on (a viewer joining a tier asks for one, so it starts within
a frame or two), and beside each frame the faces the MJPEG overlay draws on it, with the
frame's timestamp, so the page draws them over the very frame.

A slow link costs frames or quality, never a growing delay:

* a viewer with more than MAX_BEHIND_S of video waiting on the server (TCP pushes back) has
  it dropped and resumes at a keyframe;
* a page that acknowledges what it receives (the dashboard's player) has at most about
  WINDOW_S of what its link delivers on its way (a window, as TCP's, but end to end): the
  rest waits on the server, where the rule above applies. That bounds the buffers the
  server cannot see: a proxy's, a mobile network's, the browser's own (Chromium's network
  emulation keeps many seconds of video there);
* a websocket viewer that skips on the full tier moves to the low tier (a new init
  segment: its player starts over there), and tries the full tier again later.

Frame timestamps are the capture times (decisions and boxes are on the frames analysed), so
a loaded machine lowers the frame rate, not the timing.

A camera that sends H.264 already (an RTSP camera, a file) is passed through on the full tier
instead (passthrough.py: its packets muxed as they are); a viewer joining it gets the frames
since the camera's last keyframe at once. The low tier is encoded from the decoded frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from .config import VideoConfig
from .hub import FrameHub, Packet
from .metrics import Metrics
from .mp4 import Encoder, Fragment, Passthrough, Timeline
from .passthrough import Feed, FrameMessage, Inbox, frame_message

log = logging.getLogger(__name__)
T = TypeVar("T")

#: What a viewer may have waiting, in seconds of video, before it skips to the next keyframe;
#: a page that acknowledges, whose window already holds what its link can take, half that.
MAX_BEHIND_S: Final = 1.0
MAX_BEHIND_ACKED_S: Final = 0.5
#: Viewers may ask for a keyframe (joining, or skipping) at most this often.
KEYFRAME_ASK_S: Final = 0.5
SEND_TIMEOUT_S: Final = 10.0
#: A page that acknowledges (the dashboard's player) has at most what its link delivered in
#: this long on its way (sent, not acknowledged yet), and at least its tier's first window:
#: a quarter of a second at the tier's bitrate, and not under MIN_WINDOW.
WINDOW_S: Final = 0.5
FIRST_WINDOW_S: Final = 0.25
MIN_WINDOW: Final = 16 * 1024
#: The link's delivery rate is measured over the acknowledgements of this long.
RATE_SPAN_S: Final = 1.0
#: A viewer moved to the low tier tries the full one again after this long, twice as long
#: each time the full tier holds it back again within PROBE_S, at most UPGRADE_MAX_S.
UPGRADE_AFTER_S: Final = 15.0
UPGRADE_MAX_S: Final = 240.0
PROBE_S: Final = 10.0

FULL: Final = "full"
LOW: Final = "low"
TIERS: Final = (FULL, LOW)

#: What a viewer sends: ("json", message), ("text", a message's JSON), ("init", init segment)
#: or ("fragment", Fragment).
Item = tuple[str, Any]


@dataclass(eq=False)
class Viewer:
    """One viewer's stream: what it has yet to send, bounded by how far behind it may be
    (see VideoStream._deliver). Its writer takes ``next()``."""

    queue: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    #: The presentation times of the fragments queued, oldest first.
    pending: deque[float] = field(default_factory=deque)
    #: Fragments are held back until a keyframe (joining, or after falling behind).
    waiting: bool = True
    sent_init: bytes | None = None
    #: Acknowledges the binary bytes it receives (``ack``): flow control by a window.
    acks: bool = False
    #: Can move between tiers (a websocket page starts over on a new init segment); one MP4
    #: file cannot.
    adaptive: bool = False
    tier: str = FULL
    #: The window before the link's rate is known (its tier's, see WINDOW_S).
    first_window: int = MIN_WINDOW
    #: Binary bytes handed to its socket and acknowledged, in all; recent acknowledgements
    #: (when, the total then), for the delivery rate.
    sent: int = 0
    acked: int = 0
    deliveries: deque[tuple[float, int]] = field(default_factory=deque)
    acked_event: asyncio.Event = field(default_factory=asyncio.Event)
    #: The faces (JSON) it sent with its latest frame message.
    last_faces: str | None = None
    #: Counts what it has had dropped: a fragment taken before a drop is not sent after it.
    epoch: int = 0
    #: How often it fell behind and skipped to a keyframe.
    skips: int = 0
    #: When it last moved to the low tier, and last tried the full one again; how long it
    #: waits on the low tier before trying again.
    low_since: float = 0.0
    probe_since: float = -float("inf")
    upgrade_after: float = UPGRADE_AFTER_S

    def ack(self, total: int) -> None:
        """Its page has received ``total`` binary bytes in all."""
        total = min(total, self.sent)
        if total <= self.acked:
            return
        now = time.monotonic()
        self.acked = total
        self.deliveries.append((now, total))
        while len(self.deliveries) > 2 and now - self.deliveries[1][0] >= RATE_SPAN_S:
            self.deliveries.popleft()
        self.acked_event.set()

    def window(self) -> float:
        """How many bytes may be on their way: WINDOW_S of the link's delivery rate (over
        the last RATE_SPAN_S), at least the first window."""
        d = self.deliveries
        if len(d) < 2 or d[-1][0] - d[0][0] < 0.1:
            return self.first_window
        rate = (d[-1][1] - d[0][1]) / max(d[-1][0] - d[0][0], time.monotonic() - d[0][0])
        return max(self.first_window, rate * WINDOW_S)

    async def _room_for(self, size: int) -> None:
        """Until ``size`` more bytes fit in the window (at once if nothing is on its way)."""
        while self.acks and self.sent > self.acked and \
                self.sent - self.acked + size > self.window():
            self.acked_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.acked_event.wait(), 0.1)

    def put(self, kind: str, item: Any) -> None:
        if kind == "fragment":
            self.pending.append(item.t)
        self.queue.put_nowait((kind, item))

    def start_over(self) -> None:
        """What it has queued goes, and it waits for a new init segment (another tier, a new
        encoder or muxer), then a keyframe."""
        self.drop_pending()
        self.sent_init, self.waiting = None, True

    def drop_pending(self) -> None:
        """Forget what it has queued (frames and their faces), not its init segment."""
        self.epoch += 1
        kept = []
        while not self.queue.empty():
            kind, item = self.queue.get_nowait()
            if kind == "init" or (kind == "json" and item.get("type") == "init"):
                kept.append((kind, item))
        for item in kept:
            self.queue.put_nowait(item)
        self.pending.clear()

    async def next(self) -> Item:
        """What to send next; a fragment once the window has room for it. (A "burst"
        fragment, of a GOP given at once on joining, is sent as any other but does not count
        as being behind.) A frame's message comes as ("text", its JSON), without its faces
        if they are those it sent with its previous frame."""
        while True:
            kind, item = await self.queue.get()
            if kind == "json":
                if isinstance(item, FrameMessage):
                    same = item.faces_text == self.last_faces
                    self.last_faces = item.faces_text
                    return "text", item.brief if same else item.text
                self.last_faces = None  # anything else: the next frame says its faces
                return kind, item
            if kind in ("fragment", "burst"):
                if kind == "fragment" and self.pending:
                    self.pending.popleft()
                kind = "fragment"
                epoch = self.epoch
                await self._room_for(len(item.data))
                if epoch != self.epoch:
                    continue  # dropped while it waited (skipped, or another tier)
                self.sent += len(item.data)
            elif kind == "init":
                self.sent += len(item)
            return kind, item


class _Tier:
    """One encoding of the camera's frames and its viewers."""

    def __init__(self, name: str, bitrate_kbps: int, max_side: int, config: VideoConfig
                 ) -> None:
        self.name, self.bitrate_kbps, self.max_side = name, bitrate_kbps, max_side
        self.config = config
        self.viewers: set[Viewer] = set()
        self.encoder: Encoder | None = None
        #: The encoder's presentation times.
        self.timeline: Timeline | None = None
        self.last_key = -float("inf")
        self.key_wanted = False
        self.key_asked = -float("inf")
        self.frames_encoded = 0

    def keyframe(self, now: float) -> bool:
        """Whether the frame captured at ``now`` is to be a keyframe: the interval is up,
        or one was asked for (at most every KEYFRAME_ASK_S). Timed by capture times, as
        everything on live video is."""
        keyframe = (now - self.last_key >= self.config.keyframe_interval_s
                    or (self.key_wanted and now - self.key_asked >= KEYFRAME_ASK_S))
        if keyframe:
            self.last_key = now
            if self.key_wanted:
                self.key_wanted, self.key_asked = False, now
        return keyframe


class VideoStream:
    """One camera's H.264 streams for its video viewers (see the module's docstring)."""

    def __init__(self, hub: FrameHub, config: VideoConfig, camera: str,
                 metrics: Metrics | None = None) -> None:
        self.hub = hub
        self.config = config
        self.camera = camera
        self.metrics = metrics if metrics is not None else Metrics()
        self.tiers = {FULL: _Tier(FULL, config.bitrate_kbps, config.max_side, config)}
        if config.low_bitrate_kbps:
            self.tiers[LOW] = _Tier(LOW, config.low_bitrate_kbps,
                                    min(config.low_max_side, config.max_side), config)
        self.viewers: set[Viewer] = set()
        self._task: asyncio.Task[None] | None = None
        #: The camera's own H.264, passed through on the full tier when it can be.
        self.feed = Feed(config, camera, self)
        # The encoders' one thread: their calls run in order, so a close never overlaps an
        # encode that a cancelled task left running (libx264 would crash).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"video {camera}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def frames_encoded(self) -> int:
        return sum(tier.frames_encoded for tier in self.tiers.values())

    @property
    def keyframe_interval_s(self) -> float | None:
        """The passed-through camera's keyframe interval (None until measured); the
        encoder's own otherwise."""
        if self.feed.source is None:
            return self.config.keyframe_interval_s
        return self.feed.keyframe_interval_s

    def inbox(self, loop: asyncio.AbstractEventLoop) -> Inbox:
        """Where the capture's reader thread hands its packets (capture.PacketSink)."""
        return Inbox(self.feed, loop, self.metrics.video_packets_dropped.labels(self.camera))

    def join(self, acks: bool = False, adaptive: bool = False, tier: str = FULL) -> Viewer:
        """A new viewer, on ``tier`` (the full one if there is no such tier)."""
        viewer = Viewer(acks=acks, adaptive=adaptive)
        self.viewers.add(viewer)
        self._move(viewer, tier if tier in self.tiers else FULL, time.monotonic())
        if not self.running:
            self._task = asyncio.create_task(self._run(), name=f"video {self.camera}")
        return viewer

    async def leave(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
        self.tiers[viewer.tier].viewers.discard(viewer)
        if not self.tiers[FULL].viewers:
            self.feed.close_muxer()
        if not self.viewers:
            await self.stop()

    async def stop(self) -> None:
        """Stop encoding (the last viewer left, or the camera is going)."""
        self.feed.close_muxer()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """The camera is going: stop encoding and end every viewer's stream."""
        await self.stop()
        for viewer in self.viewers:
            viewer.queue.put_nowait(("close", None))
        self.viewers.clear()
        for tier in self.tiers.values():
            tier.viewers.clear()
        self._thread.shutdown(wait=False)

    def _move(self, viewer: Viewer, name: str, now: float) -> None:
        """Put ``viewer`` on tier ``name``: its init segment, then a keyframe asked for."""
        self.tiers[viewer.tier].viewers.discard(viewer)
        if name != FULL and not self.tiers[FULL].viewers:
            self.feed.close_muxer()  # nobody left to mux for
        if viewer.sent_init is not None and name != viewer.tier:
            self.metrics.video_tier_moves.labels(self.camera, name).inc()
        viewer.start_over()
        viewer.tier = name
        tier = self.tiers[name]
        viewer.first_window = max(MIN_WINDOW, round(tier.bitrate_kbps * 125 * FIRST_WINDOW_S))
        tier.viewers.add(viewer)
        if name == LOW:
            viewer.low_since = now
        if name == FULL and self.feed.source is not None:
            if self.feed.muxer is None:
                self.feed.open_muxer()
            elif self.feed.muxer.init is not None:
                self._send_passthrough(viewer)
            return
        tier.key_wanted = True
        if tier.encoder is not None and tier.encoder.init is not None:
            self._send_init(viewer, tier)

    def _fell_behind(self, viewer: Viewer, tier: _Tier, now: float) -> None:
        """``viewer``'s link did not keep up with ``tier``: to the low tier if it can go
        there, else on to a keyframe, asked for."""
        if tier.name == FULL and viewer.adaptive and LOW in self.tiers:
            failed_probe = now - viewer.probe_since < PROBE_S
            viewer.upgrade_after = (min(viewer.upgrade_after * 2, UPGRADE_MAX_S)
                                    if failed_probe else UPGRADE_AFTER_S)
            self._move(viewer, LOW, now)
            log.debug("%s: a video viewer moved to the low tier", self.camera)
        else:
            tier.key_wanted = True

    def _try_full(self, now: float) -> None:
        """Viewers on the low tier long enough without trouble try the full one again."""
        low = self.tiers.get(LOW)
        if low is None:
            return
        for viewer in [v for v in low.viewers
                       if v.adaptive and now - v.low_since >= v.upgrade_after]:
            viewer.probe_since = now
            self._move(viewer, FULL, now)

    async def _run(self) -> None:
        seq = 0
        try:
            while self.viewers and not self.hub.closed:
                packet = await self.hub.next(seq, timeout=1.0)
                if packet is None:
                    continue
                seq = packet.seq
                if packet.image is None:
                    self._signal_lost()
                    continue
                self._try_full(time.monotonic())
                for tier in self.tiers.values():
                    if tier.name == FULL and self.feed.source is not None:
                        # Passed through (passthrough.py): no encoder.
                        if tier.encoder is not None:
                            await self._close_encoder(tier)
                    elif tier.viewers:
                        await self._encode(tier, packet)
                    elif tier.encoder is not None:
                        await self._close_encoder(tier)
        finally:
            for tier in self.tiers.values():
                await self._close_encoder(tier)

    async def _close_encoder(self, tier: _Tier) -> None:
        encoder, tier.encoder, tier.timeline = tier.encoder, None, None
        if encoder is not None:
            await self._call(encoder.close)

    async def _encode(self, tier: _Tier, packet: Packet) -> None:
        image = packet.image
        assert image is not None
        h, w = image.shape[:2]
        # A phone's screen: the encoder's cost and the bitrate go with size. (4:2:0 needs
        # even sides.)
        scale = min(1.0, tier.max_side / max(h, w))
        w, h = max(2, round(w * scale)) // 2 * 2, max(2, round(h * scale)) // 2 * 2
        if tier.encoder is None or tier.encoder.size != (w, h):
            await self._close_encoder(tier)
            tier.encoder = await self._call(Encoder, w, h, tier.bitrate_kbps,
                                            self.config.preset)
            tier.timeline = Timeline(packet.captured_at)
            for viewer in tier.viewers:
                viewer.start_over()
        timeline = tier.timeline
        assert timeline is not None
        pts = timeline.pts(packet.captured_at)
        encoder = tier.encoder
        fragments = await self._call(encoder.encode, image, pts,
                                     tier.keyframe(packet.captured_at))
        tier.frames_encoded += 1
        self.metrics.video_frames.labels(self.camera, tier.name).inc()
        now = time.monotonic()
        if encoder.init is not None:
            for viewer in tier.viewers:
                if viewer.sent_init is not encoder.init:
                    self._send_init(viewer, tier)
        message = frame_message(pts, packet.captured_at, (w, h), packet.faces, scale)
        for fragment in fragments:
            self._deliver(tier, fragment, message, now)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the encoders' thread. Cancelling the caller does not cancel the
        call: the task waits for it (shielded), so nothing else starts meanwhile."""
        future = asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait({future})
            raise

    def _send_init(self, viewer: Viewer, tier: _Tier) -> None:
        assert tier.encoder is not None
        self._give_init(viewer, tier.name, tier.encoder, self.config.keyframe_interval_s)

    def _give_init(self, viewer: Viewer, tier: str, muxer: Encoder | Passthrough,
                   keyframe_interval_s: float | None) -> None:
        """``muxer``'s init segment, with what it is, to ``viewer`` (what it had queued goes):
        from here it waits for a keyframe."""
        assert muxer.init is not None
        viewer.drop_pending()
        viewer.put("json", {"type": "init", "codec": muxer.codec, "camera": self.camera,
                            "tier": tier, "size": list(muxer.size),
                            "passthrough": isinstance(muxer, Passthrough),
                            "keyframe_interval_s": keyframe_interval_s})
        viewer.put("init", muxer.init)
        viewer.sent_init, viewer.waiting = muxer.init, True

    # -- the passthrough's viewers (passthrough.Viewers) -----------------------------------

    def watched(self) -> bool:
        return bool(self.tiers[FULL].viewers)

    def start_over(self) -> None:
        for viewer in self.tiers[FULL].viewers:
            viewer.start_over()

    def resync(self) -> None:
        for viewer in self.tiers[FULL].viewers:
            viewer.waiting = True

    def send_gop(self) -> None:
        for viewer in self.tiers[FULL].viewers:
            self._send_passthrough(viewer)

    def fragment(self, fragment: Fragment, frame: dict[str, Any]) -> None:
        tier, muxer = self.tiers[FULL], self.feed.muxer
        assert muxer is not None
        for viewer in tier.viewers:
            if viewer.sent_init is not muxer.init:
                self._send_passthrough(viewer)  # the GOP before this fragment
        self.metrics.video_frames.labels(self.camera, "passthrough").inc()
        self._deliver(tier, fragment, frame, time.monotonic())

    def _send_passthrough(self, viewer: Viewer) -> None:
        """The passthrough's init segment, then the GOP so far at once (it starts there)."""
        muxer = self.feed.muxer
        assert muxer is not None
        self._give_init(viewer, FULL, muxer, self.feed.keyframe_interval_s)
        viewer.waiting = not self.feed.gop
        for fragment, frame in self.feed.gop:
            viewer.put("json", {**frame, "burst": True})  # the player plays on from the last
            viewer.put("burst", fragment)

    def _signal_lost(self) -> None:
        for viewer in self.viewers:
            if not viewer.waiting:
                viewer.queue.put_nowait(("json", {"type": "signal", "signal": False}))

    def _deliver(self, tier: _Tier, fragment: Fragment, frame: dict[str, Any], now: float
                 ) -> None:
        """``fragment`` and its ``frame`` message (its faces) to each of the tier's viewers
        it goes to: a frame a viewer skips costs it nothing, not even its faces."""
        for viewer in list(tier.viewers):
            if viewer.sent_init is None:
                continue
            behind = MAX_BEHIND_ACKED_S if viewer.acks else MAX_BEHIND_S
            if viewer.pending and fragment.t - viewer.pending[0] > behind:
                # Behind by more than it may be: what it has not sent goes, and it goes on
                # from a keyframe (on the low tier if it can go there), live again.
                viewer.drop_pending()
                viewer.skips += 1
                self.metrics.video_skips.labels(self.camera).inc()
                viewer.waiting = True
                self._fell_behind(viewer, tier, now)
                if viewer.tier != tier.name:
                    continue
            if viewer.waiting:
                if not fragment.keyframe:
                    # Caught up: a keyframe for it, where that costs nobody else a thing.
                    if tier.name == LOW or len(tier.viewers) == 1:
                        tier.key_wanted = True
                    continue
                viewer.waiting = False
            viewer.put("json", frame)
            viewer.put("fragment", fragment)

