"""Face detection, alignment and embedding: the CPU-heavy work, run in worker processes.

Pipeline: dlib's HOG detector (or, by config, dlib's CNN detector or OpenCV's Haar cascade)
finds faces on a downscaled copy of the image; dlib's 5-point landmarks align each face into a
chip (dlib's own alignment, which measured 98.3% on the shared LFW pairs where plain Haar crops
give 90%); DeepFace embeds the chips with the configured model.
Nothing here touches the event loop: ``workers.py`` calls it inside the process pool.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from . import weights
from .identity import normalize

Box = tuple[int, int, int, int]  # x, y, w, h

#: Chip geometry per model: side in pixels (the model's input) and padding around the face.
CHIP_SIZE: Final[dict[str, int]] = {
    "Dlib": 150,
    "Facenet": 160,
    "Facenet512": 160,
    "ArcFace": 112,
    "SFace": 112,
    "VGG-Face": 224,
    "OpenFace": 96,
    "DeepFace": 152,
    "DeepID": 55,
    "GhostFaceNet": 112,
}
CHIP_PADDING: Final = 0.25
#: Aligned crops kept in the gallery (for thumbnails and re-embedding with another model).
CROP_SIZE: Final = 160
CROP_QUALITY: Final = 90
#: Box overlap (intersection over union) at or above which a detection continues a track.
TRACK_IOU: Final = 0.3
#: DeepFace's input normalisation matching how each model was trained.
NORMALIZATION: Final[dict[str, str]] = {
    "Facenet": "Facenet",
    "Facenet512": "Facenet",
    "ArcFace": "ArcFace",
    "VGG-Face": "VGGFace",
}
#: Still images (uploads) are detected at up to this side with one upsampling step, which
#: finds faces down to ~40 px: slower than the live path but uploads are rare.
STILL_DETECT_SIDE: Final = 800
STILL_UPSAMPLE: Final = 1
#: Detector threshold adjustment for the second look at still images without a face.
FALLBACK_ADJUST: Final = -0.5
#: Working copies of huge uploads are capped at this side before alignment.
STILL_MAX_SIDE: Final = 2400


class ImageError(Exception):
    """An upload that cannot be used; ``status`` is the HTTP status the edge answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass
class Face:
    """One detected face: its box in the input image's pixels and, if computed, its embedding."""

    box: Box
    embedding: NDArray[np.float32] | None = None
    crop_jpeg: bytes | None = None  # aligned crop, JPEG, for the gallery


@dataclass
class FrameResult:
    faces: list[Face]
    detect_s: float
    embed_s: float
    embedded: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _resize_to(image: NDArray[Any], max_side: int) -> tuple[NDArray[Any], float]:
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


class Recognizer:
    """Loads the detector, landmark model and recognition model once; one per worker process."""

    def __init__(
        self,
        model: str,
        detect_max_side: int = 640,
        detect_upsample: int = 0,
        detector: str = "hog",
    ) -> None:
        import dlib
        from deepface import DeepFace

        weights.check(model, detector)
        self.model = model
        self.detector = detector
        self.detect_max_side = detect_max_side
        self.detect_upsample = detect_upsample
        self._dlib = dlib
        self._deepface = DeepFace
        self._detector = dlib.get_frontal_face_detector()
        self._cnn: Any = None
        self._haar: Any = None
        if detector == "cnn":
            self._cnn = dlib.cnn_face_detection_model_v1(str(weights.detector_path("cnn")))
        elif detector == "haar":
            import cv2

            self._haar = cv2.CascadeClassifier(str(weights.detector_path("haar")))
        self._landmarks = dlib.shape_predictor(str(weights.landmarks_path()))
        self._chip = CHIP_SIZE[model]
        self._normalization = NORMALIZATION.get(model, "base")
        DeepFace.build_model(model_name=model, task="facial_recognition")
        # One warm-up pass so the first live face is not slowed by lazy initialisation.
        self._represent([np.full((self._chip, self._chip, 3), 128, dtype=np.uint8)])

    # -- detection and alignment ---------------------------------------------------------

    def detect(
        self, bgr: NDArray[np.uint8], max_side: int, upsample: int, fallback: bool = False
    ) -> list[Any]:
        """dlib rectangles in ``bgr``'s coordinates, largest first.

        With ``fallback`` (still images, where the sender says a face is there), an image in
        which nothing reaches the detector's normal threshold gets a second look at a lower
        one and keeps only its single best candidate: this finds the faces that HOG scores
        just under its threshold (3 of the 567 LFW images) without multiplying false ones.
        """
        import cv2

        small, scale = _resize_to(bgr, max_side)
        rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        if self.detector == "cnn":
            found = [d.rect for d in self._cnn(rgb, upsample)]
        elif self.detector == "haar":
            found = self._haar_detect(rgb, upsample)
        else:
            found = list(self._detector(rgb, upsample))
            if not found and fallback:
                rects, scores, _ = self._detector.run(rgb, upsample, FALLBACK_ADJUST)
                if len(rects):
                    found = [rects[int(np.argmax(scores))]]
        rects = []
        for r in found:
            rects.append(
                self._dlib.rectangle(
                    round(r.left() / scale),
                    round(r.top() / scale),
                    round(r.right() / scale),
                    round(r.bottom() / scale),
                )
            )
        rects.sort(key=lambda r: r.width() * r.height(), reverse=True)
        return rects

    def _haar_detect(self, rgb: NDArray[np.uint8], upsample: int) -> list[Any]:
        """OpenCV's Haar cascade (the prototype's detector), as dlib rectangles."""
        import cv2

        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        factor = 2**upsample
        if factor > 1:
            gray = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
        boxes = self._haar.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                            minSize=(40, 40))
        return [
            self._dlib.rectangle(
                int(x / factor), int(y / factor), int((x + w) / factor), int((y + h) / factor)
            )
            for x, y, w, h in boxes
        ]

    def align(
        self, bgr: NDArray[np.uint8], rects: Sequence[Any]
    ) -> list[tuple[NDArray[np.uint8], bytes]]:
        """For each face: the aligned chip the model embeds (BGR, the model's input size) and
        the aligned crop kept in the gallery (JPEG, CROP_SIZE), from 5-point landmarks."""
        import cv2

        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        out = []
        for rect in rects:
            shape = self._landmarks(rgb, rect)
            crop = self._dlib.get_face_chip(rgb, shape, size=CROP_SIZE, padding=CHIP_PADDING)
            if self._chip == CROP_SIZE:
                chip = crop
            else:
                chip = self._dlib.get_face_chip(rgb, shape, size=self._chip, padding=CHIP_PADDING)
            ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(crop[:, :, ::-1]),
                                    [cv2.IMWRITE_JPEG_QUALITY, CROP_QUALITY])
            out.append((np.ascontiguousarray(chip[:, :, ::-1]), jpeg.tobytes() if ok else b""))
        return out

    def embed_crops(self, crops: Sequence[bytes]) -> list[NDArray[np.float32] | None]:
        """Embed stored gallery crops (re-embedding for another model): same alignment and
        padding as live chips, only resized to this model's input."""
        import cv2

        chips: list[NDArray[np.uint8]] = []
        valid: list[int] = []
        for i, data in enumerate(crops):
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                continue
            if img.shape[:2] != (self._chip, self._chip):
                img = cv2.resize(img, (self._chip, self._chip), interpolation=cv2.INTER_AREA)
            chips.append(img)
            valid.append(i)
        out: list[NDArray[np.float32] | None] = [None] * len(crops)
        for i, emb in zip(valid, self.embed_chips(chips)):
            out[i] = emb
        return out

    def embed_chips(
        self, chips: Sequence[NDArray[np.uint8]]
    ) -> list[NDArray[np.float32] | None]:
        """L2-normalised embeddings; None for a chip whose embedding is degenerate (zero)."""
        out: list[NDArray[np.float32] | None] = []
        for raw in self._represent(chips):
            try:
                out.append(normalize(raw))
            except ValueError:
                out.append(None)
        return out

    def _represent(self, chips: Sequence[NDArray[np.uint8]]) -> list[list[float]]:
        if not chips:
            return []
        result = self._deepface.represent(
            img_path=list(chips),
            model_name=self.model,
            detector_backend="skip",
            enforce_detection=False,
            align=False,
            normalization=self._normalization,
        )
        # One image in: a list of dicts; several: a list of lists of dicts.
        per_image = [result] if len(chips) == 1 else result
        return [objs[0]["embedding"] for objs in per_image]

    # -- entry points --------------------------------------------------------------------

    def analyze_frame(
        self,
        bgr: NDArray[np.uint8],
        skip: Sequence[Box] = (),
        due: Sequence[Box] = (),
        embed_new: bool = True,
    ) -> FrameResult:
        """Detect every face; embed only those that need it.

        A face overlapping a box in ``skip`` belongs to a track embedded recently (or being
        embedded by another worker right now): not embedded. One overlapping a box in ``due``
        is a tracked face due for re-embedding: embedded. Any other face is new and embedded
        only with ``embed_new``, so two workers never both embed the same newcomer.
        """
        t0 = time.perf_counter()
        rects = self.detect(bgr, self.detect_max_side, self.detect_upsample)
        t1 = time.perf_counter()
        faces = [Face(_to_box(r, bgr.shape)) for r in rects]
        todo = []
        for i, face in enumerate(faces):
            if any(iou(face.box, b) >= TRACK_IOU for b in skip):
                continue
            if embed_new or any(iou(face.box, b) >= TRACK_IOU for b in due):
                todo.append(i)
        if todo:
            aligned = self.align(bgr, [rects[i] for i in todo])
            embs = self.embed_chips([chip for chip, _ in aligned])
            for i, (_, crop), emb in zip(todo, aligned, embs):
                faces[i].embedding = emb
                faces[i].crop_jpeg = crop
        t2 = time.perf_counter()
        return FrameResult(faces, detect_s=t1 - t0, embed_s=t2 - t1, embedded=len(todo))

    def analyze_image(self, bgr: NDArray[np.uint8]) -> list[Face]:
        """Every face in a still image, largest first, each with its embedding and crop."""
        work, _ = _resize_to(bgr, STILL_MAX_SIDE)
        scale_back = bgr.shape[1] / work.shape[1]
        rects = self.detect(work, STILL_DETECT_SIDE, STILL_UPSAMPLE, fallback=True)
        aligned = self.align(work, rects)
        faces = []
        for rect, (_, crop), emb in zip(
            rects, aligned, self.embed_chips([chip for chip, _ in aligned])
        ):
            if emb is None:
                continue
            x, y, w, h = _to_box(rect, work.shape)
            box = (
                round(x * scale_back),
                round(y * scale_back),
                round(w * scale_back),
                round(h * scale_back),
            )
            faces.append(Face(box, emb, crop))
        return faces


def _to_box(rect: Any, shape: tuple[int, ...]) -> Box:
    """Clip a dlib rectangle to the image and turn it into (x, y, w, h)."""
    h, w = shape[:2]
    x0 = max(0, rect.left())
    y0 = max(0, rect.top())
    x1 = min(w, rect.right())
    y1 = min(h, rect.bottom())
    return (x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def decode_image(data: bytes, max_pixels: int) -> NDArray[np.uint8]:
    """Decode an uploaded image into BGR, or raise ImageError (400 bad data, 413 too large).

    Pillow reads the header first, so a small file claiming a huge canvas is refused before
    any pixel is decoded; then it decodes fully, which fails loudly on truncated data (a
    partial JPEG would otherwise decode to a half-grey picture). JPEG, PNG (16-bit, RGBA,
    palette), WEBP whatever the file name says, BMP, TIFF and GIF are accepted; EXIF
    orientation is applied.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageError(400, "the image is empty")
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise ImageError(400, "not an image that can be decoded (JPEG, PNG, WEBP, BMP, TIFF)")
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageError(
                413, f"image is {width}x{height} pixels; the limit is {max_pixels} pixels"
            )
        try:
            img.load()
            img = ImageOps.exif_transpose(img) or img
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                wide = np.asarray(img, dtype=np.float64)
                gray = np.clip(wide / max(1.0, float(wide.max())) * 255.0, 0, 255)
                rgb = np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)
            else:
                rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            raise ImageError(400, "the image data is corrupt or truncated and cannot be decoded")
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageError(400, "the image has no pixels")
    return np.ascontiguousarray(rgb[:, :, ::-1])


# Environment for DeepFace inside workers: run on onnxruntime/dlib on the CPU, no TF probing.
WORKER_ENV: Final = {
    "DEEPFACE_BACKEND_ENGINE": "onnx",
    "DEEPFACE_ONNX_PROVIDERS": "cpu",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


def configure_environment() -> None:
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
