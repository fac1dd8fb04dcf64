"""An RTSP camera for the tests: GStreamer's RTSP server playing an H.264 MP4 in a loop.

Runs under Debian's Python (``/usr/bin/python3``), which has GObject introspection and the
RTSP server library (``install.sh`` installs them); the project's venv has neither. Only the
standard library and ``gi`` are imported, so this file does not import the tests package.

    /usr/bin/python3 tests/rtsp_server.py clip.mp4 [--port 0] [--path /camera]

serves ``rtsp://127.0.0.1:PORT/camera`` with ``filesrc ! qtdemux ! h264parse ! rtph264pay``
and prints ``ready PORT`` once the socket accepts connections (``--port 0``: a free port,
picked by the kernel, so two test runs never race for one). Every client sees the same
stream (a shared media), which plays at the clip's own rate and starts over at its end
without a break, like a camera: no end of stream, continuous RTP timestamps. SIGTERM or
SIGINT stops it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

#: What the tests' camera is: the clip's H.264 as it is (no re-encoding), SPS and PPS
#: repeated before every keyframe so a client joining the shared stream late can decode.
LAUNCH = ("( filesrc location={location} ! qtdemux name=demux ! h264parse "
          "! rtph264pay name=pay0 pt=96 config-interval=-1 )")

#: The elements LAUNCH uses, and the Debian package each comes in.
ELEMENTS = {"filesrc": "libgstreamer1.0-0", "qtdemux": "gstreamer1.0-plugins-good",
            "h264parse": "gstreamer1.0-plugins-bad", "rtph264pay": "gstreamer1.0-plugins-good"}
#: How long the first seek may take to reach the sending pad (the machine may be busy).
SEGMENT_WAIT_S = 10.0


def loop_forever(factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia
                 ) -> None:
    """Make ``media`` play its file over and over (the factory's media-configure handler).

    Segment seeks, the usual way to loop in GStreamer: a seek with the SEGMENT flag makes the
    demuxer post SEGMENT_DONE at the end instead of sending end-of-stream, and a second,
    non-flushing segment seek from there goes on from the start with the running time going
    on, so the RTP timestamps never jump back and the clients notice nothing.

    The seeks go to the demuxer itself: one sent to the media's pipeline reaches its RTP
    sinks and goes no further. The media owns the pipeline's bus watch, so SEGMENT_DONE is
    caught as a sync message (in the streaming thread) and the seek is made from the main
    loop.
    """
    demux = media.get_element().get_by_name("demux")

    def seek(flags: Gst.SeekFlags) -> bool:
        if not demux.seek(1.0, Gst.Format.TIME, flags | Gst.SeekFlags.SEGMENT,
                          Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1):
            print("rtsp_server: a segment seek failed", file=sys.stderr, flush=True)
        return False  # once, from GLib.idle_add

    def segment_done(bus: Gst.Bus, message: Gst.Message) -> None:
        GLib.idle_add(seek, Gst.SeekFlags.NONE)

    pipeline = media.get_element().get_parent()
    bus = pipeline.get_bus()
    bus.enable_sync_message_emission()
    bus.connect("sync-message::segment-done", segment_done)

    def prepared(_media: GstRtspServer.RTSPMedia) -> None:
        # Prerolled and paused, before any client plays it: from here on, segments. The
        # flush takes the segment off the pads until the demuxer sends the new one, and a
        # PLAY answered before that aborts the server (gst_rtsp_media_get_rates asserts that
        # every stream has a segment). "prepared" is emitted in the thread of the request
        # that prepared the media, before its answer: waiting here keeps that client's PLAY
        # behind the new segment.
        seek(Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT)
        pad = sending_pad(pipeline)
        deadline = time.monotonic() + SEGMENT_WAIT_S
        while pad.get_sticky_event(Gst.EventType.SEGMENT, 0) is None:
            if time.monotonic() > deadline:
                print(f"rtsp_server: no segment {SEGMENT_WAIT_S:.0f} s after the first seek",
                      file=sys.stderr, flush=True)
                return
            time.sleep(0.005)

    media.connect("prepared", prepared)


def sending_pad(pipeline: Gst.Pipeline) -> Gst.Pad:
    """The pad the media's RTP leaves by (rtpbin's send_rtp_src_0, after the payloader),
    whose segment the media's PLAY answer reads; the payloader's own pad without one."""
    for element in pipeline.children:
        factory = element.get_factory()
        if factory is not None and factory.get_name() == "rtpbin":
            pad = element.get_static_pad("send_rtp_src_0")
            if pad is not None:
                return pad
    return pipeline.get_by_name("pay0").get_static_pad("src")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clip", type=Path, help="an H.264 MP4")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--path", default="/camera")
    args = p.parse_args()
    if not args.clip.is_file():
        p.error(f"no such clip: {args.clip}")

    Gst.init(None)
    # Checked now: the launch line is only parsed when the first client asks for the stream.
    missing = {name: package for name, package in ELEMENTS.items()
               if Gst.ElementFactory.find(name) is None}
    if missing:
        print("rtsp_server: missing GStreamer elements "
              + ", ".join(f"{name} (Debian package {pkg})" for name, pkg in missing.items()),
              file=sys.stderr)
        return 1
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = str(args.clip.resolve())
    if '"' in location:
        p.error("the clip's path may not hold a double quote (it goes into a launch line)")
    factory.set_launch(LAUNCH.format(location=f'"{location}"'))
    factory.set_shared(True)
    factory.connect("media-configure", loop_forever)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, loop.quit)
    print(f"ready {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
