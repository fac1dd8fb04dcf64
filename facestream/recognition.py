"""Face detection, alignment and embedding: the CPU-heavy work, run in worker processes.

Detection finds each face's box, with the detector's confidence and, with YuNet (the default),
five landmarks. Every model then embeds faces aligned the way it was trained:

- SFace (the default): OpenCV's 112 px crop aligned on YuNet's five landmarks
  (``cv2.FaceRecognizerSF.alignCrop``). Through DeepFace's own detectors SFace scores 72-90% on
  the LFW pairs; on these crops 99%.
- Dlib and the other DeepFace models: dlib's face chip from its 5-point landmarks (98.3% on
  the LFW pairs for Dlib, where plain crops give 90%).

DeepFace embeds the aligned crops. For every embedded face the gallery gets a model-neutral
record (``SampleImages``): a square of twice the face's size around it, with the face's box and
landmarks in that square, from which any model's alignment can be made again later
(``embed_stored``), so a gallery moves between models without anyone re-enrolling.

Live frames also get a cheap "look" of each face (a colour histogram of its box): a tracked
face whose look changed since its last embedding is embedded again at once, so a name follows
the person and not the box after a camera cut or when someone else steps into it.

Nothing here touches the event loop: ``workers.py`` calls it inside the process pool.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

from . import weights
from .geometry import TRACK_IOU, Box, area, inside, iou
from .images import (
    CONTEXT_SCALE,
    LOOK_SAME,
    Landmarks,
    SampleImages,
    clip_box,
    look,
    resize_to,
    sample_images,
    square,
)
from .matching import normalize

#: Models aligned on YuNet's landmarks with OpenCV's alignCrop; the others use dlib chips.
LANDMARK_ALIGNED: Final = frozenset({"SFace"})
#: Chip size (the model's input) of the models aligned with dlib chips.
CHIP_SIZE: Final[dict[str, int]] = {
    "Dlib": 150,
    "Facenet": 160,
    "Facenet512": 160,
    "ArcFace": 112,
    "VGG-Face": 224,
    "OpenFace": 96,
    "DeepFace": 152,
    "DeepID": 55,
    "GhostFaceNet": 112,
}
CHIP_PADDING: Final = 0.25
#: DeepFace's input normalisation matching how each model was trained.
NORMALIZATION: Final[dict[str, str]] = {
    "Facenet": "Facenet",
    "Facenet512": "Facenet",
    "ArcFace": "ArcFace",
    "VGG-Face": "VGGFace",
}
#: Still images (uploads) are detected at up to this side: YuNet finds faces from ~10 px, so
#: group photos need the resolution; dlib HOG gets one upsampling step (faces from ~40 px).
STILL_DETECT_SIDE: Final = 1280
STILL_DETECT_SIDE_DLIB: Final = 800
STILL_UPSAMPLE: Final = 1
#: HOG's threshold adjustment for a second look at still images without a face.
FALLBACK_ADJUST: Final = -0.5
#: Working copies of huge uploads are capped at this side before alignment.
STILL_MAX_SIDE: Final = 2400
YUNET_NMS: Final = 0.3



@dataclass(frozen=True)
class Detection:
    """A face as the detector found it; ``box`` may reach outside the image (``clipped``
    is the part inside, which the API shows)."""

    box: Box
    score: float
    landmarks: Landmarks | None = None

    def clipped(self, shape: tuple[int, ...]) -> Box:
        return clip_box(*self.box, shape)


@dataclass(frozen=True)
class StoredFace:
    """A gallery sample's images, to embed again: ``context`` with its geometry, or only the
    ``crop`` of a sample stored before contexts existed (a dlib chip)."""

    context: bytes | None
    geometry: dict[str, Any] | None
    crop: bytes | None


@dataclass
class Face:
    """One detected face: its box in the input image's pixels, the detector's confidence and,
    if computed, its embedding and gallery images."""

    box: Box
    embedding: NDArray[np.float32] | None = None
    images: SampleImages | None = None
    score: float = 0.0
    look: NDArray[np.float32] | None = None
    #: How much this look of the face tells who it is (0-1): see ``look_quality``.
    quality: float = 0.0
    #: Whether the embedding was made from the camera's full-resolution pixels (not from a
    #: stream copy scaled down from them).
    full_res: bool = True


@dataclass(frozen=True)
class RegionImage:
    """A part of the camera's full-resolution frame to look for faces in: its pixels, where
    it lies in the full frame, and the scale to detect at (above 1: upsampled)."""

    pixels: NDArray[np.uint8]
    x0: int
    y0: int
    scale: float
    #: A tile of the sweep: a new face found in it is embedded at once, whatever
    #: ``embed_new`` says (the next frame searches another tile, so it would be lost).
    tile: bool = False


@dataclass(frozen=True)
class TrackHint:
    """What a worker is told about a face tracked at ``box``: its look when last embedded,
    and whether it is due for re-embedding anyway."""

    box: Box
    look: NDArray[np.float32] | None
    due: bool


@dataclass
class FrameResult:
    faces: list[Face]
    detect_s: float
    embed_s: float
    embedded: int = 0
    timings: dict[str, float] = field(default_factory=dict)


class Recognizer:
    """Loads the detector, the aligner and the recognition model once; one per worker."""

    def __init__(
        self,
        model: str,
        detect_max_side: int = 640,
        detect_upsample: int = 0,
        detector: str = "yunet",
        min_face_score: float = 0.7,
        threads: int = 1,
    ) -> None:
        import cv2
        import dlib
        from deepface import DeepFace

        weights.check(model, detector)
        self.model = model
        self.detector = detector
        self.detect_max_side = detect_max_side
        self.detect_upsample = detect_upsample
        self.min_face_score = min_face_score
        self._dlib = dlib
        self._deepface = DeepFace
        self._hog: Any = None
        self._cnn: Any = None
        self._haar: Any = None
        self._yunet: Any = None
        self._sface: Any = None
        self._shape: Any = None
        if detector == "hog":
            self._hog = dlib.get_frontal_face_detector()
        elif detector == "cnn":
            self._cnn = dlib.cnn_face_detection_model_v1(str(weights.detector_path("cnn")))
        elif detector == "haar":
            self._haar = cv2.CascadeClassifier(str(weights.detector_path("haar")))
        if detector == "yunet" or model in LANDMARK_ALIGNED:
            self._yunet = cv2.FaceDetectorYN.create(
                str(weights.path(weights.YUNET_FILE)), "", (320, 320), min_face_score,
                YUNET_NMS, 5000)
        if model in LANDMARK_ALIGNED:
            # alignCrop needs a FaceRecognizerSF; its own network is not used for embedding
            # (DeepFace runs SFace on onnxruntime).
            self._sface = cv2.FaceRecognizerSF.create(str(weights.path(weights.SFACE_FILE)), "")
            self._chip = 112
        else:
            self._shape = dlib.shape_predictor(str(weights.path(weights.LANDMARKS_FILE)))
            self._chip = CHIP_SIZE[model]
        self._normalization = NORMALIZATION.get(model, "base")
        client = DeepFace.build_model(model_name=model, task="facial_recognition")
        _limit_onnx_threads(client, model, threads)
        # One warm-up pass so the first live face is not slowed by lazy initialisation.
        self._represent([np.full((self._chip, self._chip, 3), 128, dtype=np.uint8)])

    # -- detection -----------------------------------------------------------------------

    def detect(self, bgr: NDArray[np.uint8], max_side: int, upsample: int = 0,
               still: bool = False) -> list[Detection]:
        """Faces in ``bgr``, largest first, in ``bgr``'s pixels.

        For still images (``still``) dlib HOG gets a second look at a lower threshold when
        nothing reaches its normal one, keeping only its best candidate: this finds the faces
        HOG scores just under its threshold (3 of the 567 LFW images).
        """
        import cv2

        small, scale = resize_to(bgr, max_side)
        if self.detector == "yunet":
            found = self._yunet_detect(small)
        else:
            rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
            if self.detector == "cnn":
                found = [(d.rect, float(d.confidence)) for d in self._cnn(rgb, upsample)]
            elif self.detector == "haar":
                found = self._haar_detect(rgb, upsample)
            else:
                rects, scores, _ = self._hog.run(rgb, upsample, 0.0)
                found = list(zip(rects, scores))
                if not found and still:
                    rects, scores, _ = self._hog.run(rgb, upsample, FALLBACK_ADJUST)
                    if len(rects):
                        i = int(np.argmax(scores))
                        found = [(rects[i], scores[i])]
            found = [
                Detection((r.left(), r.top(), r.right() - r.left(), r.bottom() - r.top()),
                          float(s))
                for r, s in found
            ]
        out = []
        for d in found:
            # The box as detected, which may reach outside the image: alignment wants it so.
            x, y, w, h = (round(v / scale) for v in d.box)
            clipped = clip_box(x, y, w, h, bgr.shape)
            if clipped[2] < 2 or clipped[3] < 2:
                continue
            marks = (None if d.landmarks is None
                     else tuple(float(v) / scale for v in d.landmarks))
            out.append(Detection((x, y, w, h), d.score, marks))
        out.sort(key=lambda d: area(d.clipped(bgr.shape)), reverse=True)
        return out

    def _yunet_detect(self, bgr: NDArray[np.uint8]) -> list[Detection]:
        h, w = bgr.shape[:2]
        self._yunet.setInputSize((w, h))
        self._yunet.setScoreThreshold(self.min_face_score)
        _, rows = self._yunet.detect(bgr)
        if rows is None:
            return []
        # Boxes may reach outside the image; the caller clips them, landmarks stay exact.
        return [Detection((row[0], row[1], row[2], row[3]), float(row[14]),
                          tuple(float(v) for v in row[4:14])) for row in rows]

    def _haar_detect(self, rgb: NDArray[np.uint8], upsample: int) -> list[tuple[Any, float]]:
        """OpenCV's Haar cascade (the prototype's detector), as dlib rectangles."""
        import cv2

        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        factor = 2**upsample
        if factor > 1:
            gray = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
        boxes = self._haar.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                            minSize=(40, 40))
        return [
            (self._dlib.rectangle(int(x / factor), int(y / factor), int((x + w) / factor),
                                  int((y + h) / factor)), 1.0)
            for x, y, w, h in boxes
        ]

    def landmarks_near(self, bgr: NDArray[np.uint8], box: Box | tuple[float, ...]
                       ) -> Landmarks | None:
        """YuNet's landmarks of the face at ``box`` (found by another detector, or stored):
        YuNet looks at a square of twice the face around it, and its detection overlapping
        ``box`` most is taken."""
        x, y, w, h = box
        side = max(w, h) * CONTEXT_SCALE
        size = max(64, min(640, round(side)))
        region, x0, y0, scale = square(bgr, x + w / 2, y + h / 2, side, size)
        self._yunet.setInputSize((size, size))
        self._yunet.setScoreThreshold(min(self.min_face_score, 0.5))
        _, rows = self._yunet.detect(region)
        if rows is None:
            return None
        want = (round((x - x0) * scale), round((y - y0) * scale), round(w * scale),
                round(h * scale))
        best = max(rows, key=lambda r: iou(want, (round(r[0]), round(r[1]), round(r[2]),
                                                  round(r[3]))))
        if iou(want, (round(best[0]), round(best[1]), round(best[2]), round(best[3]))) < 0.2:
            return None
        pts = best[4:14].reshape(-1, 2).astype(np.float64) / scale + (x0, y0)
        return tuple(float(v) for v in pts.ravel())

    # -- alignment and embedding ---------------------------------------------------------

    def aligned(self, bgr: NDArray[np.uint8], det: Detection) -> NDArray[np.uint8] | None:
        """The model's input for the face ``det`` (BGR), or None when it cannot be aligned
        (SFace without landmarks that YuNet can find)."""
        if self._sface is not None:
            marks = det.landmarks if det.landmarks is not None else \
                self.landmarks_near(bgr, det.box)
            if marks is None:
                return None
            row = np.array([*det.box, *marks, det.score], dtype=np.float32)
            return np.ascontiguousarray(self._sface.alignCrop(bgr, row))
        import cv2

        x, y, w, h = det.box
        rect = self._dlib.rectangle(round(x), round(y), round(x + w), round(y + h))
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        shape = self._shape(rgb, rect)
        chip = self._dlib.get_face_chip(rgb, shape, size=self._chip, padding=CHIP_PADDING)
        return np.ascontiguousarray(chip[:, :, ::-1])

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

    def _embed(self, faces: Sequence[tuple[NDArray[np.uint8], Detection]]
               ) -> list[tuple[NDArray[np.float32], SampleImages, NDArray[np.uint8]] | None]:
        """Each face ``(image, detection)`` embedded, with its gallery images cut from that
        image and its aligned chip; None for one that cannot be aligned or embedded."""
        chips = [self.aligned(image, det) for image, det in faces]
        ready = [i for i, c in enumerate(chips) if c is not None]
        embs = self.embed_chips([chips[i] for i in ready])  # type: ignore[misc]
        out: list[tuple[NDArray[np.float32], SampleImages, NDArray[np.uint8]] | None] = \
            [None] * len(faces)
        for i, emb in zip(ready, embs):
            if emb is not None:
                image, det = faces[i]
                out[i] = (emb, sample_images(image, det.box, det.landmarks), chips[i])  # type: ignore[assignment]
        return out

    def embed_stored(self, faces: Sequence[StoredFace]) -> list[NDArray[np.float32] | None]:
        """Embed gallery samples again (for another model) from their stored images."""
        import cv2

        chips: list[NDArray[np.uint8] | None] = []
        for face in faces:
            data = face.context if face.context is not None else face.crop
            image = (cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                     if data else None)
            if image is None:
                chips.append(None)
            elif face.context is not None and face.geometry is not None:
                geo = face.geometry
                box = tuple(round(v) for v in geo["box"])
                marks = tuple(geo["landmarks"]) if geo.get("landmarks") else None
                chips.append(self.aligned(image, Detection(box, 1.0, marks)))  # type: ignore[arg-type]
            elif self._sface is None:
                # A dlib chip stored before contexts existed: it is this alignment already.
                if image.shape[:2] != (self._chip, self._chip):
                    image = cv2.resize(image, (self._chip, self._chip),
                                       interpolation=cv2.INTER_AREA)
                chips.append(image)
            else:
                # A dlib chip for SFace: its face fills the middle 1 / (1 + 2 * padding).
                side = image.shape[0] / (1 + 2 * CHIP_PADDING)
                off = (image.shape[0] - side) / 2
                chips.append(self.aligned(image, Detection(
                    (round(off), round(off), round(side), round(side)), 1.0)))
        ready = [i for i, c in enumerate(chips) if c is not None]
        out: list[NDArray[np.float32] | None] = [None] * len(faces)
        for i, emb in zip(ready, self.embed_chips([chips[i] for i in ready])):  # type: ignore[misc]
            out[i] = emb
        return out

    # -- entry points --------------------------------------------------------------------

    def analyze_frame(
        self,
        bgr: NDArray[np.uint8],
        tracked: Sequence[TrackHint] = (),
        embed_new: bool = True,
        regions: Sequence[RegionImage] = (),
        ratio: float = 1.0,
        min_face_px: int = 0,
    ) -> FrameResult:
        """Detect every face; embed only those that need it. Boxes are in ``bgr``'s pixels
        (the stream copy of the frame).

        Besides ``bgr`` (the fast pass, scaled to ``detect_max_side``), faces are looked for
        in ``regions`` of the full-resolution frame, ``ratio`` times ``bgr``'s size (see
        regions.py). The passes' detections are merged (one face each, a full-resolution one
        preferred), and a face found at full resolution is embedded, and its gallery images
        cut, from full-resolution pixels. Faces narrower than ``min_face_px`` full-resolution
        pixels are ignored.

        A face overlapping a tracked box is embedded when the track is due, or when its look
        is no longer the one the track had at its last embedding (a camera cut, somebody
        else in that place); otherwise not. Any other face is new and embedded only with
        ``embed_new``, so two workers never both embed the same newcomer.
        """
        t0 = time.perf_counter()
        found = [_Found(d, bgr, d, max(d.box[2], d.box[3]) * ratio)
                 for d in self.detect(bgr, self.detect_max_side, self.detect_upsample)]
        if self._yunet is not None and self.detector == "yunet":
            for region in regions:
                for d in self._detect_region(region):
                    x, y, w, h = d.box
                    in_stream = Detection(tuple(round(v) for v in (  # type: ignore[arg-type]
                        (x + region.x0) / ratio, (y + region.y0) / ratio, w / ratio,
                        h / ratio)), d.score)
                    found.append(_Found(in_stream, region.pixels, d, max(w, h), region.tile))
        floor = min_face_px * MIN_FACE_SLACK
        found = _merged([f for f in found if f.side >= floor], bgr.shape)
        t1 = time.perf_counter()
        faces = [Face(box := f.stream.clipped(bgr.shape), score=f.stream.score,
                      look=look(bgr, box)) for f in found]
        todo = []
        for i, face in enumerate(faces):
            hint = max(tracked, key=lambda t: iou(face.box, t.box), default=None)
            if hint is None or iou(face.box, hint.box) < TRACK_IOU:
                if embed_new or found[i].swept:
                    todo.append(i)
            elif hint.due or _changed_look(face.look, hint.look):
                todo.append(i)
        embedded = self._embed([(found[i].source, found[i].det) for i in todo])
        for i, done in zip(todo, embedded):
            if done is None:
                continue
            f = found[i]
            faces[i].embedding, faces[i].images, chip = done
            # Its size in the pixels it was embedded from: a look from the scaled stream
            # copy tells less than one from the full-resolution frame.
            faces[i].quality = look_quality(f.det, max(f.det.box[2], f.det.box[3]), chip)
            faces[i].full_res = f.source is not bgr or ratio <= 1.0
        t2 = time.perf_counter()
        return FrameResult(faces, detect_s=t1 - t0, embed_s=t2 - t1, embedded=len(todo))

    def _detect_region(self, region: RegionImage) -> list[Detection]:
        """YuNet's faces in ``region`` at its scale, in the region's own pixels (floats:
        alignment wants them exact)."""
        import cv2

        h, w = region.pixels.shape[:2]
        s = region.scale
        image = np.ascontiguousarray(region.pixels)
        if abs(s - 1.0) > 1e-3:
            size = (max(1, round(w * s)), max(1, round(h * s)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR if s > 1
                               else cv2.INTER_AREA)
        return [Detection(tuple(float(v) / s for v in d.box), d.score,  # type: ignore[arg-type]
                          None if d.landmarks is None else
                          tuple(float(v) / s for v in d.landmarks))
                for d in self._yunet_detect(image)]

    def analyze_image(self, bgr: NDArray[np.uint8]) -> list[Face]:
        """Every face in a still image, largest first, each with its embedding, detection
        score and gallery images."""
        work, _ = resize_to(bgr, STILL_MAX_SIDE)
        scale_back = bgr.shape[1] / work.shape[1]
        side = STILL_DETECT_SIDE if self.detector == "yunet" else STILL_DETECT_SIDE_DLIB
        dets = self.detect(work, side, STILL_UPSAMPLE, still=True)
        faces = []
        for det, done in zip(dets, self._embed([(work, d) for d in dets])):
            if done is None:
                continue
            emb, images, _ = done
            box = tuple(round(v * scale_back) for v in det.clipped(work.shape))
            faces.append(Face(box, emb, images, det.score))  # type: ignore[arg-type]
        return faces


#: Faces this much narrower than ``camera.min_face_px`` still count (detected sizes vary).
MIN_FACE_SLACK: Final = 0.8
#: A look of a face this many (full-resolution) pixels wide or more is sharp enough.
GOOD_FACE_PX: Final = 80
#: The variance of the Laplacian of an aligned 112 px chip above which it counts as sharp.
SHARP_VARIANCE: Final = 150.0


class _Found(NamedTuple):
    """A face one of analyze_frame's passes detected: its detection in the stream copy's
    pixels, the image it was found in (the stream copy or a full-resolution region) with its
    detection there, its width in full-resolution pixels, and whether a tile of the sweep
    found it."""

    stream: Detection
    source: NDArray[np.uint8]
    det: Detection
    side: float
    swept: bool = False


def _merged(found: list[_Found], shape: tuple[int, ...]) -> list[_Found]:
    """One detection per face: the passes overlap (a tracked face's region, the tiles, the
    fast pass), so detections of one face are merged, keeping the one seen at the finest
    resolution (the largest in its own pixels), then the most confident; largest first.
    A detection mostly inside a kept one is a tile's cut through a face found whole."""
    order = sorted(found, key=lambda f: (max(f.det.box[2], f.det.box[3]), f.stream.score),
                   reverse=True)
    kept: list[tuple[Box, _Found]] = []
    for f in order:
        box = f.stream.clipped(shape)
        if box[2] < 2 or box[3] < 2:
            continue
        if all(iou(box, other) < TRACK_IOU and not inside(box, other) for other, _ in kept):
            kept.append((box, f))
    kept.sort(key=lambda k: area(k[0]), reverse=True)
    return [f for _, f in kept]


def look_quality(det: Detection, side: float, chip: NDArray[np.uint8]) -> float:
    """How much one look of a face tells who it is, 0-1: the detector's confidence, times
    its size (full-resolution pixels, up to GOOD_FACE_PX), how frontal it is (the nose
    between the eyes, from the landmarks) and how sharp its aligned chip is."""
    import cv2

    size = min(1.0, side / GOOD_FACE_PX)
    frontal = 1.0
    if det.landmarks is not None:
        (rx, _), (lx, _), (nx, _) = np.asarray(det.landmarks[:6]).reshape(3, 2)
        eyes = abs(lx - rx)
        if eyes > 0:
            frontal = max(0.2, 1.0 - 1.5 * abs(nx - (lx + rx) / 2) / eyes)
    gray = cv2.cvtColor(chip, cv2.COLOR_BGR2GRAY)
    sharp = min(1.0, 0.3 + 0.7 * float(cv2.Laplacian(gray, cv2.CV_64F).var()) / SHARP_VARIANCE)
    return float(max(0.0, min(1.0, det.score)) * size * frontal * sharp)


#: A photo whose second-largest face has at least this share of the largest one's area shows
#: no single person: which one to enroll is ambiguous.
SIMILAR_SIZE: Final = 0.6


def ambiguous(faces: Sequence[Face]) -> bool:
    """Several faces of similar size (largest first): the photo does not say who it shows."""
    return len(faces) > 1 and area(faces[1].box) >= SIMILAR_SIZE * area(faces[0].box)


def _changed_look(now: NDArray[np.float32] | None, before: NDArray[np.float32] | None) -> bool:
    return now is not None and before is not None and float(now @ before) < LOOK_SAME


def _limit_onnx_threads(client: Any, model: str, threads: int) -> None:
    """DeepFace builds its onnxruntime sessions with one thread per core; with one worker
    process per core that oversubscribes the CPU (two workers of two threads each on this
    2-core machine embed slower than two of one). Rebuild the session with ``threads``."""
    session = getattr(client, "model", None)
    if session is None or not hasattr(session, "get_inputs"):
        return  # not an onnxruntime model (Dlib)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    client.model = ort.InferenceSession(str(weights.path(weights.MODEL_FILES[model][0])),
                                        sess_options=options,
                                        providers=session.get_providers())


# Environment for DeepFace inside workers: run on onnxruntime/dlib on the CPU, no TF probing.
WORKER_ENV: Final = {
    "DEEPFACE_BACKEND_ENGINE": "onnx",
    "DEEPFACE_ONNX_PROVIDERS": "cpu",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


def configure_environment() -> None:
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
