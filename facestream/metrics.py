"""Prometheus metrics, one registry per app so tests can build several apps in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_STAGE_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5
)


STAGES = ("encode", "detect", "embed", "analyze", "latency", "upload")


class Metrics:
    """Counters are thread-safe: the capture threads update them directly."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames_captured = Counter(
            "facestream_frames_captured", "Frames read from the camera source.", registry=r
        )
        self.frames_encoded = Counter(
            "facestream_frames_encoded", "Stream frames encoded to JPEG (one per frame, "
            "shared by every viewer).", registry=r
        )
        self.frames_processed = Counter(
            "facestream_frames_processed", "Frames analysed by the recognition workers.",
            registry=r,
        )
        self.results_stale = Counter(
            "facestream_results_stale", "Recognition results that came back after a newer "
            "frame's result (only their embeddings are used).", registry=r,
        )
        self.faces_embedded = Counter(
            "facestream_faces_embedded", "Face embeddings computed (live and uploads).",
            registry=r,
        )
        self.stream_clients = Gauge(
            "facestream_stream_clients", "Connected MJPEG viewers.", registry=r
        )
        self.video_clients = Gauge(
            "facestream_video_clients", "Connected H.264 viewers (websocket and MP4).",
            registry=r
        )
        self.video_frames = Counter(
            "facestream_video_frames", "Frames sent on to H.264 viewers, by how: encoded for "
            "the full or the low tier, or passed through as the camera sent them.",
            ["camera", "how"], registry=r
        )
        self.video_skips = Counter(
            "facestream_video_skips", "Times an H.264 viewer's link did not keep up and it "
            "skipped to the next keyframe.", ["camera"], registry=r
        )
        self.video_tier_moves = Counter(
            "facestream_video_tier_moves", "H.264 viewers moved to a tier: to the low one (the "
            "link did not keep up) or back to the full one.", ["camera", "tier"], registry=r
        )
        self.video_packets_dropped = Counter(
            "facestream_video_packets_dropped", "A camera's own H.264 packets dropped on their "
            "way to the passthrough (the server fell behind): its viewers went on from the "
            "next keyframe.", ["camera"], registry=r
        )
        self.ws_clients = Gauge(
            "facestream_ws_clients", "Connected websocket clients.", registry=r
        )
        self.faces_in_view = Gauge(
            "facestream_faces_in_view", "Faces in the latest processed frame, per camera.",
            ["camera"], registry=r
        )
        self.gallery_size = Gauge(
            "facestream_gallery_identities", "Enrolled people.", registry=r
        )
        self.camera_up = Gauge(
            "facestream_camera_up", "1 while the camera delivers frames, 0 during no signal.",
            ["camera"], registry=r,
        )
        self.sweep_seconds = Gauge(
            "facestream_sweep_seconds", "How long the last full-resolution sweep of the "
            "camera's frame for small faces took (planned: its megapixels / "
            "camera.sweep_mp_per_s).",
            ["camera"], registry=r,
        )
        self.mqtt_connected = Gauge(
            "facestream_mqtt_connected", "1 while connected to the MQTT broker (mqtt.url).",
            registry=r,
        )
        self.mqtt_messages = Counter(
            "facestream_mqtt_messages",
            "MQTT messages: published (acknowledged by the broker), or dropped (events beyond "
            "mqtt.queue_size while the broker was away).",
            ["result"],
            registry=r,
        )
        for result in ("published", "dropped"):
            self.mqtt_messages.labels(result)
        self.webhook_deliveries = Counter(
            "facestream_webhook_deliveries",
            "Webhook events, by how they ended: delivered (2xx), failed (refused, or no "
            "success in webhooks.max_attempts), or dropped (beyond webhooks.queue_size, or "
            "still pending at shutdown).",
            ["result"],
            registry=r,
        )
        for result in ("delivered", "failed", "dropped"):
            self.webhook_deliveries.labels(result)
        self.stage_seconds = Histogram(
            "facestream_stage_seconds",
            "Time per pipeline stage: encode (annotate + JPEG, capture thread), detect and "
            "embed (inside a worker), analyze (frame round trip through the pool), latency "
            "(frame capture to recognition result applied), upload (image request in a worker).",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        for stage in STAGES:  # export every stage from the start, not after first use
            self.stage_seconds.labels(stage)

    def render(self) -> bytes:
        return generate_latest(self.registry)
