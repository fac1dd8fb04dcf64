"""Config: documented defaults are the real defaults; bad config is one line naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from facestream.config import (
    DEFAULT_CALIBRATIONS,
    DEFAULT_THRESHOLDS,
    Config,
    ConfigError,
    from_mapping,
    load,
)
from facestream.matching import Calibration

from .conftest import ROOT


def test_shipped_config_toml_documents_the_builtin_defaults() -> None:
    assert load(ROOT / "config.toml") == Config()


def test_thresholds_are_per_model_and_overridable() -> None:
    cfg = from_mapping({"recognition": {"model": "Dlib", "thresholds": {"Dlib": 0.93}}})
    assert cfg.recognition.threshold() == 0.93
    assert cfg.recognition.threshold("Facenet") == DEFAULT_THRESHOLDS["Facenet"]
    # The prototype's single 0.70 would accept most strangers with Dlib; ours is stricter.
    assert Config().recognition.threshold("Dlib") == 0.905
    assert Config().recognition.threshold() == 0.363  # SFace, OpenCV Zoo's


def test_calibration_is_per_model_and_sets_the_open_set_policy() -> None:
    cfg = from_mapping({"recognition": {"stranger_far": 0.001,
                                        "calibration": {"SFace": {"mean": 0.1, "std": 0.1}}}})
    policy = cfg.recognition.policy()
    assert policy.calibration == Calibration(0.1, 0.1) and policy.stranger_far == 0.001
    # 1 - (1 - 0.001) ** (1 / 10) = 1.0005e-4 per comparison: 3.7189 std above the mean.
    assert policy.identify_threshold(10) == pytest.approx(0.1 + 0.1 * 3.7189, abs=1e-4)
    assert Config().recognition.policy("Dlib").calibration == DEFAULT_CALIBRATIONS["Dlib"]
    # A model nobody calibrated falls back to its pairwise threshold.
    facenet = Config().recognition.policy("Facenet")
    assert facenet.calibration is None
    assert facenet.identify_threshold(500) == DEFAULT_THRESHOLDS["Facenet"]


MODELS = ("SFace, Dlib, Facenet, Facenet512, ArcFace, VGG-Face, OpenFace, DeepFace, DeepID, "
          "GhostFaceNet")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"camera": {"sauce": "0"}},
         ("camera.sauce: unknown key (known: jpeg_quality, max_side, min_face_px, name, "
          "read_timeout_s, reconnect_max_s, reconnect_min_s, source, sweep_mp_per_s)")),
        ({"webcams": {}},
         ("webcams: unknown section (known: server, camera, recognition, presence, history, "
          "video, auth, mqtt, storage, cameras, webhooks)")),
        ({"cameras": {}}, "cameras: expected [[cameras]] tables, got {}"),
        ({"cameras": [{"name": "door"}]},
         "cameras[0].source: missing (every camera needs a name and a source)"),
        ({"cameras": [{"name": "a", "source": "0"}, {"name": "a", "source": "1"}]},
         "cameras[1].name: 'a' is already the name of another camera"),
        ({"cameras": [{"name": "a", "source": "0", "jpeg_quality": 101}]},
         "cameras[0].jpeg_quality: expected 1-100, got 101"),
        ({"cameras": [{"name": "a", "source": "0", "min_face_px": 4}]},
         "cameras[0].min_face_px: expected 8-1000 pixels, got 4"),
        ({"camera": {"sweep_mp_per_s": -1}},
         "camera.sweep_mp_per_s: 0 (no sweep) to 1000 megapixels a second, got -1.0"),
        ({"camera": {"name": "front door"}},
         "camera.name: letters, digits, _ and - only (it names MQTT topics), got 'front door'"),
        ({"mqtt": {"url": "tcp://broker"}},
         "mqtt.url: expected mqtt://host[:port] or mqtts://host[:port], got 'tcp://broker'"),
        ({"mqtt": {"topic_prefix": "a/b"}},
         "mqtt.topic_prefix: letters, digits, _ and - only, got 'a/b'"),
        ({"mqtt": {"port": 1883}},
         ("mqtt.port: unknown key (known: ca_file, client_id, discovery_prefix, password, "
          "queue_size, topic_prefix, url, username)")),
        ({"storage": {"url": "mysql://u:pw@db/x", "secret": "s" * 16}},
         ("storage.url: expected postgresql://user[:password]@host[:port]/database, got "
          "'mysql://***@db/x'")),
        ({"storage": {"url": "postgresql://db/x"}},
         ("storage.secret: needed with storage.url, 16 characters or more, the same on every "
          'node (for a migrated gallery: "hex:" and the contents of DATA_DIR/secret.key)')),
        ({"storage": {"secret": "hex:00ff"}},
         ("storage.secret: after hex: come the hex digits of 16 bytes or more (the contents "
          "of DATA_DIR/secret.key)")),
        ({"webhooks": {"url": "http://x"}},
         "webhooks: expected [[webhooks]] tables, got {'url': 'http://x'}"),
        ({"webhooks": [{"url": "http://x/hook"}]},
         "webhooks[0].secret: needed to sign the requests, 16 characters or more"),
        ({"webhooks": [{"url": "ftp://x", "secret": "s" * 16}]},
         "webhooks[0].url: expected an http:// or https:// URL, got 'ftp://x'"),
        ({"webhooks": [{"url": "http://x", "secret": "s" * 16, "events": ["arrived", "boo"]}]},
         "webhooks[0].events: unknown event 'boo' (known: arrived, left, hash, gallery)"),
        ({"webhooks": [{"url": "http://x", "secret": "s" * 16, "events": []}]},
         "webhooks[0].events: expected a list of events (arrived, left, hash, gallery)"),
        ({"recognition": {"workers": "two"}},
         "recognition.workers: expected an integer, got 'two'"),
        ({"recognition": {"workers": 0}}, "recognition.workers: expected 1-64, got 0"),
        ({"recognition": {"model": "Facenet9000"}},
         f"recognition.model: unknown model 'Facenet9000' (known: {MODELS})"),
        ({"recognition": {"thresholds": {"Dlib": 3}}},
         "recognition.thresholds.Dlib: a cosine similarity between -1 and 1, got 3"),
        ({"recognition": {"thresholds": {"Nope": 0.5}}},
         f"recognition.thresholds.Nope: unknown model (known: {MODELS})"),
        ({"recognition": {"stranger_far": 0}},
         "recognition.stranger_far: expected a probability in (0, 1), got 0.0"),
        ({"recognition": {"stranger_far": "1%"}},
         "recognition.stranger_far: expected a number, got '1%'"),
        ({"recognition": {"detector": "mtcnn"}},
         "recognition.detector: unknown detector 'mtcnn' (known: yunet, hog, cnn, haar)"),
        ({"recognition": {"calibration": {"SFace": {"mean": 0.1}}}},
         "recognition.calibration.SFace: expected { mean = ..., std = ... }, got {'mean': 0.1}"),
        ({"recognition": {"calibration": {"SFace": {"mean": 0.1, "std": -1}}}},
         "recognition.calibration.SFace.std: expected a number in (0, 1], got -1.0"),
        ({"server": {"port": 70000}}, "server.port: expected 0-65535, got 70000"),
        ({"camera": {"jpeg_quality": 0}}, "camera.jpeg_quality: expected 1-100, got 0"),
    ],
)
def test_bad_values_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        from_mapping(raw)
    assert str(exc.value) == message


def test_webcam_index_may_be_an_integer() -> None:
    assert from_mapping({"camera": {"source": 1}}).camera.source == "1"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facestream", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize("text,message", [
    ('[recognition]\nworkers = "many"\n',
     "recognition.workers: expected an integer, got 'many'"),
    ("[server\nport = 1\n", ("{path}: not valid TOML (Expected ']' at the end of a table "
                              "declaration (at line 1, column 8))")),
    (None, "{path}: cannot read config file (No such file or directory)"),
], ids=["bad value", "broken TOML", "missing file"])
def test_cli_bad_config_is_one_line_and_exit_2(text: str | None, message: str,
                                               tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    if text is not None:
        path.write_text(text)
    proc = _run("--config", str(path), cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (
        2, f"config error: {message.format(path=path)}\n")
