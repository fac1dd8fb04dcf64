"""Configuration: TOML file -> validated, frozen dataclasses.

Every key has a default (the same values `config.toml` documents), unknown keys are rejected
and a bad value is reported as one line naming the key, e.g.
``config error: recognition.workers: expected an integer >= 1, got 'two'``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

#: Recognition models DeepFace can run here, with the cosine-similarity threshold at or above
#: which two faces are the same person. Dlib's is measured on the shared LFW pairs with
#: facestream's own alignment (98.3% there; DeepFace's 0.07 distance, i.e. 0.93, gives 92.8%).
#: The others are DeepFace's cosine-distance thresholds turned into similarities (1 - d).
DEFAULT_THRESHOLDS: Final[Mapping[str, float]] = {
    "Dlib": 0.905,
    "Facenet": 0.60,
    "Facenet512": 0.70,
    "ArcFace": 0.32,
    "SFace": 0.407,
    "VGG-Face": 0.32,
    "OpenFace": 0.90,
    "DeepFace": 0.77,
    "DeepID": 0.985,
    "GhostFaceNet": 0.35,
}
MODELS: Final = tuple(DEFAULT_THRESHOLDS)
#: Face detectors, each followed by 5-point alignment: dlib HOG (default), dlib's CNN (MMOD;
#: more robust, much slower on a CPU), OpenCV's Haar cascade (the original prototype's).
DETECTORS: Final = ("hog", "cnn", "haar")
#: How an identity with several samples is matched (see identity.GalleryIndex.from_samples).
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


@dataclass(frozen=True)
class CameraConfig:
    #: Webcam index ("0"), a video file path, or an rtsp:// / http(s):// (MJPEG) URL.
    source: str = "0"
    #: Stream frames wider or taller than this are scaled down before annotation and encoding.
    max_side: int = 1280
    jpeg_quality: int = 80
    #: Reconnection backoff after a lost or absent source, doubling from min to max.
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    #: A source that delivers no frame for this long counts as lost.
    read_timeout_s: float = 5.0


@dataclass(frozen=True)
class RecognitionConfig:
    model: str = "Dlib"
    #: Face detector: "hog" (dlib HOG), "cnn" (dlib MMOD CNN, slow on a CPU), "haar" (OpenCV).
    detector: str = "hog"
    #: How an identity with several samples is matched: "centroid" (the normalised mean of
    #: its samples) or "best" (its most similar sample). See the README for the measurement.
    matching: str = "centroid"
    workers: int = 2
    #: Frames are scaled so their longest side is at most this before face detection.
    detect_max_side: int = 640
    #: dlib HOG upsampling: 0 finds faces of about 80 px and up, 1 about 40 px (4x slower).
    detect_upsample: int = 0
    #: A tracked face is re-embedded this often to confirm who it is.
    reembed_interval_s: float = 1.0
    #: A track not seen for this long is gone (the face left).
    track_timeout_s: float = 0.35
    #: Per-model cosine-similarity thresholds; models not listed use DEFAULT_THRESHOLDS.
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def threshold(self, model: str | None = None) -> float:
        name = model or self.model
        return float(self.thresholds.get(name, DEFAULT_THRESHOLDS[name]))


@dataclass(frozen=True)
class StorageConfig:
    data_dir: str = "facestream-data"
    #: Secret for the HMAC of enrollment emails. Empty: generated into the data dir.
    secret: str = ""


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.storage.data_dir)


_SECTIONS: Final = {
    "server": ServerConfig,
    "camera": CameraConfig,
    "recognition": RecognitionConfig,
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
    if isinstance(default, str):
        if isinstance(value, int) and not isinstance(value, bool) and key == "camera.source":
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


def validate(config: Config) -> Config:
    """Check ranges and cross-field rules; return the config unchanged or raise ConfigError."""
    s, c, r = config.server, config.camera, config.recognition
    checks: list[tuple[bool, str]] = [
        (0 <= s.port <= 65535, f"server.port: expected 0-65535, got {s.port}"),
        (s.max_upload_mb > 0, f"server.max_upload_mb: must be > 0, got {s.max_upload_mb}"),
        (s.max_image_pixels > 0, f"server.max_image_pixels: must be > 0, got {s.max_image_pixels}"),
        (c.source.strip() != "", "camera.source: must not be empty"),
        (c.max_side >= 64, f"camera.max_side: must be >= 64, got {c.max_side}"),
        (1 <= c.jpeg_quality <= 100, f"camera.jpeg_quality: expected 1-100, got {c.jpeg_quality}"),
        (c.reconnect_min_s > 0, f"camera.reconnect_min_s: must be > 0, got {c.reconnect_min_s}"),
        (
            c.reconnect_max_s >= c.reconnect_min_s,
            f"camera.reconnect_max_s: must be >= reconnect_min_s, got {c.reconnect_max_s}",
        ),
        (c.read_timeout_s > 0, f"camera.read_timeout_s: must be > 0, got {c.read_timeout_s}"),
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
        (1 <= r.workers <= 64, f"recognition.workers: expected 1-64, got {r.workers}"),
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
        (config.storage.data_dir.strip() != "", "storage.data_dir: must not be empty"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return config


def from_mapping(raw: Mapping[str, Any]) -> Config:
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{name}: unknown section (known: {', '.join(_SECTIONS)})")
        sections[name] = _build_section(name, _SECTIONS[name], value)
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
