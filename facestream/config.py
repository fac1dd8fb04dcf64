"""Configuration: TOML file -> validated, frozen dataclasses.

Every key has a default (the same values `config.toml` documents), unknown keys are rejected
and a bad value is reported as one line naming the key, e.g.
``config error: recognition.workers: expected an integer >= 1, got 'two'``.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .matching import Calibration, OpenSetPolicy
from .privacy import HEX_PREFIX, redact_receiver, redact_source

#: Recognition models DeepFace can run here, with the cosine similarity at or above which two
#: faces are the same person when two faces are compared (1:1). SFace's is OpenCV Zoo's
#: published threshold for it (not tuned here); Dlib's was measured on the shared LFW pairs
#: with facestream's alignment. The others are DeepFace's cosine-distance thresholds turned
#: into similarities (1 - d). Who a face is among everybody enrolled (1:N) is decided by the
#: open-set policy instead (matching.OpenSetPolicy).
DEFAULT_THRESHOLDS: Final[Mapping[str, float]] = {
    "SFace": 0.363,
    "Dlib": 0.905,
    "Facenet": 0.60,
    "Facenet512": 0.70,
    "ArcFace": 0.32,
    "VGG-Face": 0.32,
    "OpenFace": 0.90,
    "DeepFace": 0.77,
    "DeepID": 0.985,
    "GhostFaceNet": 0.35,
}
MODELS: Final = tuple(DEFAULT_THRESHOLDS)
#: Where each model puts the similarities of two different people (the normal fit to the
#: upper tail of the 160,045 different-person pairs of the shared LFW subset, measured with
#: facestream's detection and alignment: ``python bench/open_set.py --calibrate``). Models
#: without one use their pairwise threshold for every gallery size; ``evaluate --open-set
#: --apply`` measures one on your own data.
DEFAULT_CALIBRATIONS: Final[Mapping[str, Calibration]] = {
    "SFace": Calibration(mean=0.0833, std=0.09064),
    "Dlib": Calibration(mean=0.85292, std=0.0234),
}
#: Face detectors: YuNet (OpenCV Zoo; five landmarks, finds small and turned faces), dlib HOG,
#: dlib's CNN (MMOD; much slower on a CPU), OpenCV's Haar cascade (the original prototype's).
DETECTORS: Final = ("yunet", "hog", "cnn", "haar")
#: How a person with several samples is matched (see matching.GalleryIndex.from_samples).
MATCHING: Final = ("centroid", "best")


class ConfigError(ValueError):
    """A configuration problem, already phrased as one line naming the key."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_upload_mb: float = 10.0
    #: Largest accepted image, in pixels (width * height), for uploads.
    max_image_pixels: int = 40_000_000
    #: Open connections one client address may hold (a viewer needs a few).
    max_connections_per_client: int = 64
    #: Unfinished request headers, and idle keep-alive connections, are closed after this.
    keepalive_timeout_s: float = 10.0
    #: A request with a body (an upload, a change) must arrive and be answered within this.
    request_timeout_s: float = 20.0
    #: HTTPS: a PEM certificate (chain) and its private key; empty: plain HTTP.
    tls_cert: str = ""
    tls_key: str = ""
    #: Host names this server answers to besides its loopback names (what a reverse proxy
    #: or the users' browsers put in the Host header). Empty: any name while accounts are
    #: on; with accounts off, only loopback names (a defence against DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()
    #: Whether POST /cameras may name a file on this machine (a path or file://); the
    #: config file always may.
    api_camera_files: bool = False
    #: Uploads (POST /process-frame, photos to enroll) a viewer may send per minute (and 2
    #: at once); 429 with Retry-After beyond it. Admins have no such limit.
    uploads_per_minute: int = 120
    #: Uploads waiting for the upload worker; beyond this, 503 with Retry-After.
    upload_queue: int = 8


@dataclass(frozen=True)
class CameraConfig:
    #: Webcam index ("0"), a video file path, or an rtsp:// / http(s):// (MJPEG) URL.
    source: str = "0"
    #: The camera's name in visits, events and MQTT topics: letters, digits, _ and -.
    name: str = "camera"
    #: Stream frames wider or taller than this are scaled down before annotation and encoding.
    max_side: int = 1280
    jpeg_quality: int = 80
    #: Reconnection backoff after a lost or absent source, doubling from min to max.
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    #: A source that delivers no frame for this long counts as lost.
    read_timeout_s: float = 5.0
    #: The smallest face to look for, in the camera's own pixels (see regions.py): faces
    #: this wide are searched for at full resolution, around tracked faces and in a sweep.
    min_face_px: int = 24
    #: The full-resolution frame is searched for new small faces tile by tile, this many
    #: megapixels of it per second: a 1080p frame (2.1 MP) every 0.52 s, a 4K one (8.3 MP)
    #: every 2.1 s, at the same CPU cost. 0: no sweep (only faces the fast pass finds).
    sweep_mp_per_s: float = 4.0


@dataclass(frozen=True)
class RecognitionConfig:
    model: str = "SFace"
    #: Face detector: "yunet" (OpenCV Zoo's YuNet), "hog" (dlib HOG), "cnn" (dlib MMOD CNN,
    #: slow on a CPU), "haar" (OpenCV's Haar cascade).
    detector: str = "yunet"
    #: YuNet confidence (0-1) a face needs; charts and drawings score 0.
    min_face_score: float = 0.7
    #: How a person with several samples is matched: "centroid" (the mean of its
    #: samples) or "best" (its most similar sample). See the README for the measurement.
    matching: str = "centroid"
    #: The chance a stranger is named as somebody enrolled, kept whatever the gallery size.
    stranger_far: float = 0.01
    #: How far the best match must lead the second best to be named.
    margin: float = 0.0
    #: The chance, per enrollment, that a new person is refused as "already enrolled"
    #: although they are somebody else: only near-certain duplicates are refused. Far below
    #: stranger_far because real lookalikes are more common than the normal tail says (the
    #: closest two different people of the shared LFW subset score 0.573 with SFace, which
    #: 1e-4 would refuse and 1e-6 does not).
    duplicate_far: float = 1e-6
    #: Processes analysing the cameras' frames.
    workers: int = 2
    #: Processes analysing uploads, apart from the cameras' and at a lower priority, so
    #: uploads never take the cameras' workers.
    upload_workers: int = 1
    #: Frames are scaled so their longest side is at most this before face detection.
    detect_max_side: int = 640
    #: dlib HOG/CNN upsampling: 0 finds faces of about 80 px and up, 1 about 40 px (4x slower).
    detect_upsample: int = 0
    #: A tracked face is re-embedded this often to confirm who it is (and at once when its
    #: look changes).
    reembed_interval_s: float = 1.0
    #: A track not seen for this long is gone (the face left).
    track_timeout_s: float = 0.35
    #: Per-model cosine-similarity thresholds for 1:1 comparisons; models not listed use
    #: DEFAULT_THRESHOLDS.
    thresholds: Mapping[str, float] = field(default_factory=dict)
    #: Per-model calibration of different-person similarities (mean, std); models not listed
    #: use DEFAULT_CALIBRATIONS.
    calibration: Mapping[str, Calibration] = field(default_factory=dict)

    def threshold(self, model: str | None = None) -> float:
        name = model or self.model
        return float(self.thresholds.get(name, DEFAULT_THRESHOLDS[name]))

    def calibrated(self, model: str | None = None) -> Calibration | None:
        name = model or self.model
        return self.calibration.get(name, DEFAULT_CALIBRATIONS.get(name))

    def policy(self, model: str | None = None) -> OpenSetPolicy:
        """The open-set decision for ``model`` (default: the configured one)."""
        return OpenSetPolicy(self.threshold(model), self.calibrated(model), self.stranger_far,
                             self.margin)


@dataclass(frozen=True)
class PresenceConfig:
    #: A person out of view this long has left: their visit ends, with one "left" event.
    depart_after_s: float = 3.0
    #: An unknown face is announced ("arrived") once it has stayed unknown this long, so a
    #: face recognised on its second look arrives once, by name.
    unknown_grace_s: float = 1.0


@dataclass(frozen=True)
class HistoryConfig:
    #: Visits (with their face crop and frame snapshot) older than this are deleted.
    retention_days: float = 30.0
    #: Snapshots of a visit's best moment are scaled to this longest side.
    snapshot_max_side: int = 640
    snapshot_quality: int = 75


@dataclass(frozen=True)
class VideoConfig:
    #: H.264 live video for the dashboard (video.py); false: every viewer gets MJPEG.
    enabled: bool = True
    #: Each camera's encoder aims at this rate, shared by all of its video viewers.
    bitrate_kbps: int = 2000
    #: A keyframe at least this often (a viewer joining asks for one at once).
    keyframe_interval_s: float = 2.0
    #: libx264's speed preset: faster costs the server less CPU for a little more bitrate.
    preset: str = "ultrafast"
    #: A camera's own H.264 (no B-frames, within max_side) goes to the full tier as it is,
    #: not decoded and encoded again; false: always encoded.
    passthrough: bool = True
    #: The video is scaled to this longest side (a 1080p camera is sent as 1280x720): a
    #: phone's screen needs no more, and the encoder costs a third of 1080p's.
    max_side: int = 1280
    #: The low tier, for viewers whose link cannot carry the full one (0: none; they skip
    #: frames instead). Encoded only while somebody is on it.
    low_bitrate_kbps: int = 400
    low_max_side: int = 640


@dataclass(frozen=True)
class AuthConfig:
    #: Accounts and tokens. false is refused unless server.host is a loopback address.
    enabled: bool = True
    #: GET /metrics without logging in (for a Prometheus scraper on a trusted network).
    metrics_open: bool = False
    #: A dashboard login lasts this long.
    session_days: float = 7.0


@dataclass(frozen=True)
class MqttConfig:
    #: Broker URL: mqtt://host[:1883] or mqtts://host[:8883] (TLS). Empty: MQTT is off.
    url: str = ""
    username: str = ""
    password: str = ""
    #: mqtts: a PEM bundle of the CAs to trust for the broker's certificate; empty: the system's.
    ca_file: str = ""
    #: Every topic starts with this.
    topic_prefix: str = "facestream"
    #: Home Assistant's MQTT discovery prefix; empty: no discovery messages.
    discovery_prefix: str = "homeassistant"
    #: Client id at the broker; empty: "facestream-" + topic_prefix.
    client_id: str = ""
    #: Events kept for the broker while it is away; the oldest are dropped beyond this
    #: (retained states are never dropped: the latest value of each is sent on reconnection).
    queue_size: int = 1000


#: What a webhook can ask for.
WEBHOOK_EVENTS: Final = ("arrived", "left", "hash", "gallery")


@dataclass(frozen=True)
class WebhookConfig:
    #: Where to POST (http or https).
    url: str = ""
    #: Which events: arrived, left (visits), hash (who is in view changed), gallery (changes).
    events: tuple[str, ...] = ("arrived", "left")
    #: HMAC-SHA256 key for the X-Facestream-Signature header (16 characters or more).
    secret: str = ""
    #: One attempt's time limit; failures are retried with doubling backoff.
    timeout_s: float = 5.0
    #: Attempts per event before it is dropped (and counted as failed).
    max_attempts: int = 8
    #: Events waiting for delivery; beyond this the oldest are dropped (and counted).
    queue_size: int = 1000


@dataclass(frozen=True)
class StorageConfig:
    data_dir: str = "facestream-data"
    #: Secret for the HMAC of enrollment emails. Empty: generated into the data dir. Nodes
    #: sharing one database must all have the same.
    secret: str = ""
    #: ``postgresql://user[:password]@host[:port]/database``: the gallery, history and
    #: accounts in PostgreSQL, shared by every node given the same URL. Empty: SQLite in
    #: ``data_dir``.
    url: str = ""


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    webhooks: tuple[WebhookConfig, ...] = ()
    #: ``[[cameras]]``; empty: the one ``[camera]``.
    cameras: tuple[CameraConfig, ...] = ()

    @property
    def camera_list(self) -> tuple[CameraConfig, ...]:
        """Every camera to serve: ``[[cameras]]``, or the one ``[camera]``."""
        return self.cameras or (self.camera,)
    storage: StorageConfig = field(default_factory=StorageConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.storage.data_dir)


_X264_PRESETS: Final = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")

_SECTIONS: Final = {
    "server": ServerConfig,
    "camera": CameraConfig,
    "recognition": RecognitionConfig,
    "presence": PresenceConfig,
    "history": HistoryConfig,
    "video": VideoConfig,
    "auth": AuthConfig,
    "mqtt": MqttConfig,
    "storage": StorageConfig,
}


def _check_value(key: str, value: Any, default: Any) -> Any:
    """Coerce ``value`` to the type of ``default`` or raise ConfigError naming ``key``."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return tuple(value)
    if isinstance(default, str):
        if isinstance(value, int) and not isinstance(value, bool) and \
                re.fullmatch(r"camera\.source|cameras\[\d+\]\.source", key):
            return str(value)  # `source = 0` means webcam 0
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported value {value!r}")  # pragma: no cover


def _build_section(name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a table, got {raw!r}")
    defaults = cls()
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{name}.{key}"
        if key not in known:
            raise ConfigError(f"{full}: unknown key (known: {', '.join(sorted(known))})")
        if key == "thresholds":
            values[key] = _thresholds(full, value)
        elif key == "calibration":
            values[key] = _calibrations(full, value)
        elif key == "events":
            values[key] = _events(full, value)
        else:
            values[key] = _check_value(full, value, getattr(defaults, key))
    return cls(**values)


def _thresholds(key: str, raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a table of model = similarity, got {raw!r}")
    out: dict[str, float] = {}
    for model, value in raw.items():
        if model not in DEFAULT_THRESHOLDS:
            raise ConfigError(f"{key}.{model}: unknown model (known: {', '.join(MODELS)})")
        number = _check_value(f"{key}.{model}", value, 0.0)
        if not -1.0 <= number <= 1.0:
            raise ConfigError(f"{key}.{model}: a cosine similarity between -1 and 1, got {value!r}")
        out[model] = number
    return out


def _calibrations(key: str, raw: Any) -> dict[str, Calibration]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a table of model = {{ mean = ..., std = ... }}")
    out: dict[str, Calibration] = {}
    for model, value in raw.items():
        where = f"{key}.{model}"
        if model not in DEFAULT_THRESHOLDS:
            raise ConfigError(f"{where}: unknown model (known: {', '.join(MODELS)})")
        if not isinstance(value, dict) or set(value) != {"mean", "std"}:
            raise ConfigError(f"{where}: expected {{ mean = ..., std = ... }}, got {value!r}")
        mean = _check_value(f"{where}.mean", value["mean"], 0.0)
        std = _check_value(f"{where}.std", value["std"], 0.0)
        if not -1.0 <= mean <= 1.0:
            raise ConfigError(f"{where}.mean: a cosine similarity between -1 and 1, got {mean}")
        if not 0.0 < std <= 1.0:
            raise ConfigError(f"{where}.std: expected a number in (0, 1], got {std}")
        out[model] = Calibration(mean, std)
    return out


def _events(key: str, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(e, str) for e in raw):
        raise ConfigError(f"{key}: expected a list of events ({', '.join(WEBHOOK_EVENTS)})")
    unknown = [e for e in raw if e not in WEBHOOK_EVENTS]
    if unknown:
        raise ConfigError(f"{key}: unknown event {unknown[0]!r} "
                          f"(known: {', '.join(WEBHOOK_EVENTS)})")
    return tuple(dict.fromkeys(raw))


def _webhooks(raw: Any) -> tuple[WebhookConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError("webhooks: expected [[webhooks]] tables, got " + repr(raw))
    return tuple(_build_section(f"webhooks[{i}]", WebhookConfig, item)
                 for i, item in enumerate(raw))


_SLUG: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: A name for server.allowed_hosts: a DNS name (a leading dot: it and every name under it),
#: an IPv4 address, or an IPv6 address in brackets.
_HOST_NAME: Final = re.compile(r"\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\]")


def _secret_checks(storage: StorageConfig) -> list[tuple[bool, str]]:
    secret = storage.secret
    if secret.startswith(HEX_PREFIX):
        try:
            size = len(bytes.fromhex(secret[len(HEX_PREFIX):]))
        except ValueError:
            size = -1
        return [(size >= 16, ("storage.secret: after hex: come the hex digits of 16 bytes or "
                             "more (the contents of DATA_DIR/secret.key)"))]
    return [(not storage.url or len(secret) >= 16,
             ("storage.secret: needed with storage.url, 16 characters or more, the same on "
             "every node (for a migrated gallery: \"hex:\" and the contents of "
             "DATA_DIR/secret.key)"))]


def _url_checks(config: Config) -> list[tuple[bool, str]]:
    m = config.mqtt
    checks = [
        (not m.url or m.url.split("://", 1)[0] in ("mqtt", "mqtts"),
         "mqtt.url: expected mqtt://host[:port] or mqtts://host[:port], got "
         f"{redact_source(m.url)!r}"),
        (bool(_SLUG.fullmatch(m.topic_prefix)),
         f"mqtt.topic_prefix: letters, digits, _ and - only, got {m.topic_prefix!r}"),
        (not m.discovery_prefix or bool(_SLUG.fullmatch(m.discovery_prefix)),
         f"mqtt.discovery_prefix: letters, digits, _ and - only, got {m.discovery_prefix!r}"),
        (m.queue_size >= 10, f"mqtt.queue_size: must be >= 10, got {m.queue_size}"),
        *_secret_checks(config.storage),
        (not config.storage.url or (
            config.storage.url.startswith(("postgresql://", "postgres://"))
            and len(config.storage.url.split("://", 1)[1]) > 0),
         ("storage.url: expected postgresql://user[:password]@host[:port]/database, got "
          f"{redact_source(config.storage.url)!r}")),
    ]
    for i, w in enumerate(config.webhooks):
        key = f"webhooks[{i}]"
        checks += [
            (w.url.split("://", 1)[0] in ("http", "https") and "://" in w.url
             and len(w.url.split("://", 1)[1]) > 0,
             f"{key}.url: expected an http:// or https:// URL, got "
             f"{redact_receiver(w.url)!r}"),
            (len(w.secret) >= 16,
             f"{key}.secret: needed to sign the requests, 16 characters or more"),
            (w.timeout_s > 0, f"{key}.timeout_s: must be > 0, got {w.timeout_s}"),
            (1 <= w.max_attempts <= 100,
             f"{key}.max_attempts: expected 1-100, got {w.max_attempts}"),
            (w.queue_size >= 1, f"{key}.queue_size: must be >= 1, got {w.queue_size}"),
        ]
    return checks


def _camera_checks(key: str, c: CameraConfig) -> list[tuple[bool, str]]:
    return [
        (c.source.strip() != "", f"{key}.source: must not be empty"),
        (bool(_SLUG.fullmatch(c.name)),
         f"{key}.name: letters, digits, _ and - only (it names MQTT topics), got {c.name!r}"),
        (c.max_side >= 64, f"{key}.max_side: must be >= 64, got {c.max_side}"),
        (1 <= c.jpeg_quality <= 100, f"{key}.jpeg_quality: expected 1-100, got {c.jpeg_quality}"),
        (c.reconnect_min_s > 0, f"{key}.reconnect_min_s: must be > 0, got {c.reconnect_min_s}"),
        (c.reconnect_max_s >= c.reconnect_min_s,
         f"{key}.reconnect_max_s: must be >= reconnect_min_s, got {c.reconnect_max_s}"),
        (c.read_timeout_s > 0, f"{key}.read_timeout_s: must be > 0, got {c.read_timeout_s}"),
        (8 <= c.min_face_px <= 1000,
         f"{key}.min_face_px: expected 8-1000 pixels, got {c.min_face_px}"),
        (0 <= c.sweep_mp_per_s <= 1000,
         f"{key}.sweep_mp_per_s: 0 (no sweep) to 1000 megapixels a second, "
         f"got {c.sweep_mp_per_s}"),
    ]


def check_camera(c: CameraConfig, key: str = "camera") -> CameraConfig:
    """``c`` unchanged, or ConfigError naming the first bad key."""
    for ok, message in _camera_checks(key, c):
        if not ok:
            raise ConfigError(message)
    return c


def _cameras_checks(cameras: tuple[CameraConfig, ...]) -> list[tuple[bool, str]]:
    checks: list[tuple[bool, str]] = []
    seen: set[str] = set()
    for i, c in enumerate(cameras):
        checks += _camera_checks(f"cameras[{i}]", c)
        checks.append((c.name not in seen,
                       f"cameras[{i}].name: {c.name!r} is already the name of another camera"))
        seen.add(c.name)
    return checks


def parse_cameras(raw: Any, base: CameraConfig) -> tuple[CameraConfig, ...]:
    """``[[cameras]]``: each needs a name and a source; other keys default to ``[camera]``'s."""
    if not isinstance(raw, list):
        raise ConfigError("cameras: expected [[cameras]] tables, got " + repr(raw))
    out = []
    for i, item in enumerate(raw):
        key = f"cameras[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{key}: expected a table, got {item!r}")
        for needed in ("name", "source"):
            if needed not in item:
                raise ConfigError(f"{key}.{needed}: missing (every camera needs a name and a "
                                  "source)")
        own = _build_section(key, CameraConfig, item)
        given = {k: getattr(own, k) for k in item}
        out.append(dataclasses.replace(base, **given))
    return tuple(out)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate(config: Config) -> Config:
    """Check ranges and cross-field rules; return the config unchanged or raise ConfigError."""
    s, c, r = config.server, config.camera, config.recognition
    p, h, v = config.presence, config.history, config.video
    checks: list[tuple[bool, str]] = [
        (0 <= s.port <= 65535, f"server.port: expected 0-65535, got {s.port}"),
        (s.max_upload_mb > 0, f"server.max_upload_mb: must be > 0, got {s.max_upload_mb}"),
        (s.max_image_pixels > 0, f"server.max_image_pixels: must be > 0, got {s.max_image_pixels}"),
        (s.max_connections_per_client >= 4,
         f"server.max_connections_per_client: must be >= 4, got {s.max_connections_per_client}"),
        (s.keepalive_timeout_s > 0,
         f"server.keepalive_timeout_s: must be > 0, got {s.keepalive_timeout_s}"),
        (s.request_timeout_s > 0,
         f"server.request_timeout_s: must be > 0, got {s.request_timeout_s}"),
        (bool(s.tls_cert) == bool(s.tls_key),
         "server.tls_cert and server.tls_key: give both (HTTPS) or neither (HTTP)"),
        *((bool(_HOST_NAME.fullmatch(h)),
           f"server.allowed_hosts: {h!r} is not a host name (no scheme, port or path: "
           "\"cams.example.org\", or \".example.org\" for it and every name under it)")
          for h in s.allowed_hosts),
        (s.uploads_per_minute >= 1,
         f"server.uploads_per_minute: must be >= 1, got {s.uploads_per_minute}"),
        (s.upload_queue >= 1, f"server.upload_queue: must be >= 1, got {s.upload_queue}"),
        *_camera_checks("camera", c),
        *_cameras_checks(config.cameras),
        (
            r.model in DEFAULT_THRESHOLDS,
            f"recognition.model: unknown model {r.model!r} (known: {', '.join(MODELS)})",
        ),
        (
            r.detector in DETECTORS,
            (f"recognition.detector: unknown detector {r.detector!r} "
            f"(known: {', '.join(DETECTORS)})"),
        ),
        (
            r.matching in MATCHING,
            f"recognition.matching: expected one of {', '.join(MATCHING)}, got {r.matching!r}",
        ),
        (
            0.0 < r.stranger_far < 1.0,
            f"recognition.stranger_far: expected a probability in (0, 1), got {r.stranger_far}",
        ),
        (
            0.0 < r.duplicate_far < 1.0,
            f"recognition.duplicate_far: expected a probability in (0, 1), got {r.duplicate_far}",
        ),
        (0.0 <= r.margin < 1.0, f"recognition.margin: expected 0 to 1, got {r.margin}"),
        (
            0.0 < r.min_face_score < 1.0,
            f"recognition.min_face_score: expected 0 to 1, got {r.min_face_score}",
        ),
        (1 <= r.workers <= 64, f"recognition.workers: expected 1-64, got {r.workers}"),
        (1 <= r.upload_workers <= 64,
         f"recognition.upload_workers: expected 1-64, got {r.upload_workers}"),
        (
            r.detect_max_side >= 64,
            f"recognition.detect_max_side: must be >= 64, got {r.detect_max_side}",
        ),
        (
            0 <= r.detect_upsample <= 3,
            f"recognition.detect_upsample: expected 0-3, got {r.detect_upsample}",
        ),
        (
            r.reembed_interval_s > 0,
            f"recognition.reembed_interval_s: must be > 0, got {r.reembed_interval_s}",
        ),
        (
            r.track_timeout_s > 0,
            f"recognition.track_timeout_s: must be > 0, got {r.track_timeout_s}",
        ),
        (
            p.depart_after_s >= r.track_timeout_s,
            (f"presence.depart_after_s: must be >= recognition.track_timeout_s "
             f"({r.track_timeout_s}), got {p.depart_after_s}"),
        ),
        (p.unknown_grace_s >= 0,
         f"presence.unknown_grace_s: must be >= 0, got {p.unknown_grace_s}"),
        (h.retention_days > 0, f"history.retention_days: must be > 0, got {h.retention_days}"),
        (100 <= v.bitrate_kbps <= 50_000,
         f"video.bitrate_kbps: expected 100-50000, got {v.bitrate_kbps}"),
        (0.2 <= v.keyframe_interval_s <= 10,
         f"video.keyframe_interval_s: expected 0.2-10, got {v.keyframe_interval_s}"),
        (160 <= v.max_side <= 4096, f"video.max_side: expected 160-4096, got {v.max_side}"),
        (v.low_bitrate_kbps == 0 or 50 <= v.low_bitrate_kbps <= 50_000,
         f"video.low_bitrate_kbps: expected 0 (none) or 50-50000, got {v.low_bitrate_kbps}"),
        (160 <= v.low_max_side <= 4096,
         f"video.low_max_side: expected 160-4096, got {v.low_max_side}"),
        (v.preset in _X264_PRESETS,
         f"video.preset: expected one of {', '.join(_X264_PRESETS)}, got {v.preset!r}"),
        (
            h.snapshot_max_side >= 64,
            f"history.snapshot_max_side: must be >= 64, got {h.snapshot_max_side}",
        ),
        (
            1 <= h.snapshot_quality <= 100,
            f"history.snapshot_quality: expected 1-100, got {h.snapshot_quality}",
        ),
        (
            config.auth.enabled or is_loopback(s.host),
            (f"auth.enabled: false is only allowed when server.host is a loopback address "
             f"(127.0.0.1, ::1, localhost); it is {s.host!r}"),
        ),
        (config.auth.session_days > 0,
         f"auth.session_days: must be > 0, got {config.auth.session_days}"),
        (config.storage.data_dir.strip() != "", "storage.data_dir: must not be empty"),
        *_url_checks(config),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return config


def from_mapping(raw: Mapping[str, Any]) -> Config:
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "webhooks":
            sections[name] = _webhooks(value)
            continue
        if name == "cameras":
            continue  # below: its defaults are [camera]'s
        if name not in _SECTIONS:
            raise ConfigError(f"{name}: unknown section (known: "
                              f"{', '.join([*_SECTIONS, 'cameras', 'webhooks'])})")
        sections[name] = _build_section(name, _SECTIONS[name], value)
    if "cameras" in raw:
        sections["cameras"] = parse_cameras(raw["cameras"], sections.get("camera", CameraConfig()))
    return validate(Config(**sections))


def load(path: str | Path | None) -> Config:
    """Read a TOML config file; ``None`` gives the built-in defaults."""
    if path is None:
        return validate(Config())
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file ({exc.strerror})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    return from_mapping(raw)


def override(config: Config, **changes: Any) -> Config:
    """Apply command-line overrides given as ``section__key=value`` (None means unset)."""
    result = config
    for dotted, value in changes.items():
        if value is None:
            continue
        section, key = dotted.split("__", 1)
        current = getattr(result, section)
        checked = _check_value(f"{section}.{key}", value, getattr(current, key))
        result = dataclasses.replace(result, **{section: dataclasses.replace(current, **{key: checked})})
    return validate(result)
