"""`python -m facestream evaluate`: accuracy, threshold calibration and plots, with the real
model on a slice of the shared LFW pairs, and on a messy folder of people."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest

from facestream.verification import best_threshold, cross_validated, roc, tar_at_far

from .conftest import BIDEN, BIDEN2, FACES, OBAMA, OBAMA2, OBAMA3, ROOT


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facestream", "evaluate", *args, "--quiet"],
                          cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_lfw_slice_report_plots_and_apply(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    shutil.copy(ROOT / "config.toml", config)
    config.chmod(0o640)  # it may hold an MQTT password: its mode is the owner's choice
    before_text = config.read_text()
    out = tmp_path / "eval"
    proc = run_cli(str(FACES / "lfw"), "--pairs", "60", "--out", str(out), "--config",
                   str(config), "--apply", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # The report names the photos (people): the owner's only. The config keeps its mode.
    assert stat.S_IMODE((out / "report.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "lfw" and report["pairs"] == 60
    assert report["same_pairs"] == 30 and report["different_pairs"] == 30
    assert (report["images"], report["pairs_unverifiable"], report["images_failed"]) == (115, 0, {})
    # SFace separates these 60 pairs completely, at the configured threshold too.
    assert report["accuracy_at_configured"] == 1.0 and report["best_threshold"] == 0.3488
    assert report["cv_accuracy"] == 1.0 and report["cv_folds"] == 10
    assert report["roc_auc"] == 1.0
    assert report["tar_at_far"] == {"0.01": 1.0, "0.001": 1.0}
    assert report["far_resolution"] == pytest.approx(1 / 30)
    assert report["seconds_per_image"] > 0
    for name, shape in (("roc.png", (500, 600, 3)), ("histogram.png", (450, 700, 3))):
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape == shape, name
    lines = proc.stdout.splitlines()
    assert "  10-fold cross-validated accuracy       100.00%" in lines
    assert ("  TAR at FAR 0.01                        100.00% (fewer negatives than 1/FAR: "
            "coarse)") in lines

    # --apply changed the SFace threshold and nothing else, comments included.
    before, after = tomllib.loads(before_text), tomllib.loads(config.read_text())
    assert after["recognition"].pop("thresholds") == {"SFace": report["best_threshold"]}
    before["recognition"].pop("thresholds", None)
    assert before == after
    kept = [line for line in before_text.splitlines() if line.startswith("#")]
    assert all(line in config.read_text() for line in kept)


def test_open_set_on_lfw_people_reports_and_applies_a_calibration(tmp_path: Path) -> None:
    """The issue's protocol at a smaller gallery: 60 of the LFW people with several photos
    enrolled (one photo each), their other photos as probes, everybody else a stranger."""
    config = tmp_path / "config.toml"
    shutil.copy(ROOT / "config.toml", config)
    before_text = config.read_text()
    out = tmp_path / "eval"
    proc = run_cli(str(FACES / "lfw"), "--open-set", "--gallery-size", "60", "--out",
                   str(out), "--config", str(config), "--apply", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "open_set.json").read_text())
    assert (report["gallery"], report["strangers"]) == (60, 342 - 60)
    assert report["probes"] == 111
    # The configured policy at 60 people: about 1% of strangers named (4 of 282), and
    # nobody named as somebody else.
    assert report["policy_threshold"] == 0.4084
    assert report["strangers_named"] == pytest.approx(4 / 282)
    assert report["identified"] == pytest.approx(108 / 111)
    assert report["misidentified"] == 0.0
    assert report["strangers_refused_as_enrolled"] == 0.0
    assert report["probes_caught_as_enrolled"] == pytest.approx(92 / 111)
    assert report["at_stranger_far"] == {
        "0.01": {"threshold": 0.4153, "identification": pytest.approx(107 / 111),
                 "coarse": False},
        "0.001": {"threshold": 0.4316, "identification": pytest.approx(107 / 111),
                  "coarse": True},  # 282 strangers < 1000
    }
    assert "strangers named as somebody" in proc.stdout
    # --apply wrote this data's calibration for SFace, and nothing else.
    measured = report["calibration_measured"]
    assert measured == {"mean": pytest.approx(0.0833, abs=0.01),
                        "std": pytest.approx(0.0906, abs=0.01)}
    before, after = tomllib.loads(before_text), tomllib.loads(config.read_text())
    assert after["recognition"].pop("calibration") == {"SFace": measured}
    before["recognition"].pop("calibration", None)
    assert before == after
    assert "set recognition.calibration.SFace" in proc.stdout


def test_folder_of_people_with_bad_files_is_reported_not_a_crash(
    tmp_path: Path, no_face_png: bytes
) -> None:
    people = tmp_path / "people"
    for person, images in {"Obama": [OBAMA, OBAMA2, OBAMA3], "Biden": [BIDEN, BIDEN2]}.items():
        (people / person).mkdir(parents=True)
        for img in images:
            shutil.copy(img, people / person / img.name)
    (people / "Obama" / "flag.png").write_bytes(no_face_png)
    (people / "Biden" / "notes.jpg").write_bytes(b"this is not an image")
    (people / "Biden" / "cut.jpg").write_bytes(BIDEN.read_bytes()[:-5000])
    out = tmp_path / "eval"
    proc = run_cli(str(people), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "folders"
    failed = {Path(p).name: why for p, why in report["images_failed"].items()}
    assert failed == {
        "flag.png": "no face found",
        "notes.jpg": "not an image that can be decoded (JPEG, PNG, WEBP, BMP, TIFF)",
        "cut.jpg": "the image data is corrupt or truncated and cannot be decoded",
    }
    # Every pair within a folder (6 + 6), as many across folders, drawn with a fixed seed.
    assert (report["images"], report["same_pairs"], report["different_pairs"]) == (8, 12, 12)
    # Pairs with those files count as "different": 17 of the 24 cannot be verified, so a
    # third of the same-person pairs are missed whatever the threshold.
    assert report["pairs_unverifiable"] == 17
    assert report["accuracy_at_configured"] == pytest.approx(2 / 3)
    assert report["cv_accuracy"] == pytest.approx(2 / 3)
    assert report["roc_auc"] == pytest.approx(5 / 6)
    assert report["tar_at_far"] == {"0.01": pytest.approx(1 / 3), "0.001": pytest.approx(1 / 3)}
    assert f"    {people / 'Obama' / 'flag.png'}: no face found" in proc.stdout.splitlines()


def test_missing_or_empty_dataset_is_one_line(tmp_path: Path) -> None:
    proc = run_cli(str(tmp_path / "nowhere"), cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (2, f"error: {tmp_path / 'nowhere'} is not a folder\n")
    (tmp_path / "only_one").mkdir()
    proc = run_cli(str(tmp_path), cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (
        2, f"error: {tmp_path} needs pairs.txt or at least two Person/ folders\n")


def test_metrics_on_known_numbers() -> None:
    sims = np.array([0.99, 0.95, 0.91, 0.90, 0.85, 0.80])
    same = np.array([True, True, True, False, False, False])
    assert best_threshold(sims, same) == (0.91 + 0.90) / 2
    fpr, tpr, auc = roc(sims, same)
    assert auc == 1.0 and tar_at_far(fpr, tpr, 0.0) == 1.0
    # Three folds of two: each threshold comes from the other four values only, so two
    # held-out values (0.90 and 0.91) fall on the wrong side of their fold's threshold.
    accuracy, thresholds = cross_validated(sims, same, folds=3)
    assert thresholds == pytest.approx([(0.91 + 0.80) / 2, (0.95 + 0.90) / 2, (0.91 + 0.90) / 2])
    assert accuracy == pytest.approx(4 / 6)
    overlapping = np.array([0.9, 0.8, 0.85, 0.7])
    labels = np.array([True, True, False, False])
    _, _, auc = roc(overlapping, labels)
    assert auc == 0.75
    # An unverifiable pair (no face) never counts as the same person: the best threshold is
    # the one just below 0.9, which accepts the verifiable pair and still refuses -inf.
    assert best_threshold(np.array([-np.inf, 0.9]), np.array([True, True])) == pytest.approx(
        0.9 - 1e-6)
