"""`python -m facestream evaluate`: accuracy, threshold calibration and plots, with the real
model on a slice of the shared LFW pairs, and on a messy folder of identities."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest

from facestream.evaluate import best_threshold, cross_validated, roc, tar_at_far

from .conftest import BIDEN, BIDEN2, FACES, OBAMA, OBAMA2, OBAMA3, ROOT


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facestream", "evaluate", *args, "--quiet"],
                          cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_lfw_slice_report_plots_and_apply(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    shutil.copy(ROOT / "config.toml", config)
    before_text = config.read_text()
    out = tmp_path / "eval"
    proc = run_cli(str(FACES / "lfw"), "--pairs", "60", "--out", str(out), "--config",
                   str(config), "--apply", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "lfw" and report["pairs"] == 60
    assert report["same_pairs"] == 30 and report["different_pairs"] == 30
    assert report["accuracy_at_configured"] >= 0.9
    assert 0.9 <= report["cv_accuracy"] <= 1.0 and report["cv_folds"] == 10
    assert 0.95 <= report["roc_auc"] <= 1.0
    assert set(report["tar_at_far"]) == {"0.01", "0.001"}
    assert report["seconds_per_image"] > 0
    for name in ("roc.png", "histogram.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 200 and image.shape[1] > 200
    assert "cross-validated accuracy" in proc.stdout and "TAR at FAR 0.01" in proc.stdout

    # --apply changed the SFace threshold and nothing else, comments included.
    before, after = tomllib.loads(before_text), tomllib.loads(config.read_text())
    assert after["recognition"].pop("thresholds") == {"SFace": report["best_threshold"]}
    before["recognition"].pop("thresholds", None)
    assert before == after
    kept = [line for line in before_text.splitlines() if line.startswith("#")]
    assert all(line in config.read_text() for line in kept)


def test_open_set_on_lfw_identities_reports_and_applies_a_calibration(tmp_path: Path) -> None:
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
    assert report["probes"] > 100
    # The configured policy at 60 people: about 1% of strangers named, and nobody named as
    # somebody else.
    assert report["strangers_named"] <= 0.015 and report["identified"] >= 0.95
    assert report["misidentified"] == 0.0
    assert report["strangers_refused_as_enrolled"] == 0.0
    assert report["probes_caught_as_enrolled"] >= 0.5
    assert set(report["at_stranger_far"]) == {"0.01", "0.001"}
    assert report["at_stranger_far"]["0.001"]["coarse"] is True  # 282 strangers < 1000
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


def test_folder_of_identities_with_bad_files_is_reported_not_a_crash(
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
    assert failed["flag.png"] == "no face found"
    assert "not an image" in failed["notes.jpg"]
    assert "truncated" in failed["cut.jpg"]
    assert report["same_pairs"] == report["different_pairs"] > 0
    assert report["pairs_unverifiable"] > 0  # pairs with those files count as "different"
    assert "flag.png: no face found" in proc.stdout


def test_missing_or_empty_dataset_is_one_line(tmp_path: Path) -> None:
    proc = run_cli(str(tmp_path / "nowhere"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: ")
    (tmp_path / "only_one").mkdir()
    proc = run_cli(str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "two Person/ folders" in proc.stderr


def test_metrics_on_known_numbers() -> None:
    sims = np.array([0.99, 0.95, 0.91, 0.90, 0.85, 0.80])
    same = np.array([True, True, True, False, False, False])
    assert best_threshold(sims, same) == (0.91 + 0.90) / 2
    fpr, tpr, auc = roc(sims, same)
    assert auc == 1.0 and tar_at_far(fpr, tpr, 0.0) == 1.0
    accuracy, thresholds = cross_validated(sims, same, folds=3)
    assert len(thresholds) == 3 and 0.0 <= accuracy <= 1.0
    overlapping = np.array([0.9, 0.8, 0.85, 0.7])
    labels = np.array([True, True, False, False])
    _, _, auc = roc(overlapping, labels)
    assert auc == 0.75
    # An unverifiable pair (no face) never counts as the same person.
    assert best_threshold(np.array([-np.inf, 0.9]), np.array([True, True])) <= 0.9
