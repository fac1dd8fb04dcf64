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
from facestream.identity import Calibration

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


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"camera": {"sauce": "0"}}, "camera.sauce"),
        ({"cameras": {}}, "cameras"),
        ({"recognition": {"workers": "two"}}, "recognition.workers"),
        ({"recognition": {"workers": 0}}, "recognition.workers"),
        ({"recognition": {"model": "Facenet9000"}}, "recognition.model"),
        ({"recognition": {"thresholds": {"Dlib": 3}}}, "recognition.thresholds.Dlib"),
        ({"recognition": {"thresholds": {"Nope": 0.5}}}, "recognition.thresholds.Nope"),
        ({"recognition": {"stranger_far": 0}}, "recognition.stranger_far"),
        ({"recognition": {"stranger_far": "1%"}}, "recognition.stranger_far"),
        ({"recognition": {"detector": "mtcnn"}}, "recognition.detector"),
        ({"recognition": {"calibration": {"SFace": {"mean": 0.1}}}},
         "recognition.calibration.SFace"),
        ({"recognition": {"calibration": {"SFace": {"mean": 0.1, "std": -1}}}},
         "recognition.calibration.SFace.std"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"camera": {"jpeg_quality": 0}}, "camera.jpeg_quality"),
    ],
)
def test_bad_values_name_the_key(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        from_mapping(raw)
    assert str(exc.value).startswith(key + ":")


def test_webcam_index_may_be_an_integer() -> None:
    assert from_mapping({"camera": {"source": 1}}).camera.source == "1"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facestream", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )


def test_cli_bad_config_exits_nonzero_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[recognition]\nworkers = "many"\n')
    proc = _run("--config", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "config error: recognition.workers: expected an integer, got 'many'"
    ]


def test_cli_broken_toml_and_missing_file_are_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nport = 1\n")
    for args in (["--config", str(broken)], ["--config", str(tmp_path / "missing.toml")]):
        proc = _run(*args, cwd=tmp_path)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1
        assert proc.stderr.startswith("config error: ")
