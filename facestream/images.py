"""Images in and out of recognition: an upload decoded (or refused with an ``ImageError``),
the crops the gallery keeps of a face (``SampleImages``), and a face's look (a colour
histogram that tells a camera cut from the same face moving). Plain numpy and OpenCV: no model.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from .geometry import Box

#: Five (x, y) points, flattened: right eye, left eye, nose tip, right and left mouth corner.
Landmarks = tuple[float, ...]

#: Gallery images of a sample: a thumbnail, and a square of CONTEXT_SCALE times the face
#: (the face about half its side) kept for re-embedding with any model.
CROP_SIZE: Final = 160
CROP_SCALE: Final = 1.4
CONTEXT_SIZE: Final = 224
CONTEXT_SCALE: Final = 2.0
JPEG_QUALITY: Final = 90
#: A face's look: a colour histogram of its box (8 hue x 8 saturation bins, square-rooted
#: and unit length). Measured on the 16 shared videos, with boxes from YuNet every third
#: frame: the same face in consecutive analysed frames scores >= 0.981 (99% of the time),
#: the faces of two different people <= 0.973 (99%); below LOOK_SAME the face is re-embedded.
LOOK_BINS: Final = 8
LOOK_SAME: Final = 0.975


class ImageError(Exception):
    """An upload that cannot be used; ``status`` is the HTTP status the edge answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class SampleImages:
    """What the gallery keeps of one face: a thumbnail, and the context square (JPEGs) with
    the face's box and landmarks in the square's pixels, enough to align it for any model."""

    crop: bytes
    context: bytes
    box: tuple[float, float, float, float]
    landmarks: Landmarks | None

    def geometry(self) -> dict[str, Any]:
        return {"box": [round(v, 2) for v in self.box],
                "landmarks": None if self.landmarks is None
                else [round(v, 2) for v in self.landmarks]}


def resize_to(image: NDArray[Any], max_side: int) -> tuple[NDArray[Any], float]:
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def clip_box(x: float, y: float, w: float, h: float, shape: tuple[int, ...]) -> Box:
    ih, iw = shape[:2]
    x0, y0 = max(0, round(x)), max(0, round(y))
    x1, y1 = min(iw, round(x + w)), min(ih, round(y + h))
    return (x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def square(image: NDArray[np.uint8], cx: float, cy: float, side: float,
            size: int) -> tuple[NDArray[np.uint8], float, float, float]:
    """The ``side`` square centred on (cx, cy), padded with grey where it leaves the image,
    resized to ``size``; with the origin and scale that map image to square pixels."""
    import cv2

    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    s = max(1, round(side))
    h, w = image.shape[:2]
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y0 + s - h), max(0, x0 + s - w)
    region = image[max(0, y0):min(h, y0 + s), max(0, x0):min(w, x0 + s)]
    if top or left or bottom or right:
        region = cv2.copyMakeBorder(region, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                    value=(128, 128, 128))
    scale = size / s
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(region, (size, size), interpolation=interp), x0, y0, scale


def jpeg(image: NDArray[np.uint8]) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return buf.tobytes() if ok else b""


def sample_images(image: NDArray[np.uint8], box: Box, landmarks: Landmarks | None
                  ) -> SampleImages:
    """The gallery's record of the face at ``box`` in ``image`` (BGR)."""
    x, y, w, h = box
    cx, cy, side = x + w / 2, y + h / 2, max(w, h)
    context, x0, y0, scale = square(image, cx, cy, side * CONTEXT_SCALE, CONTEXT_SIZE)
    thumb, _, _, _ = square(image, cx, cy, side * CROP_SCALE, CROP_SIZE)
    box = ((x - x0) * scale, (y - y0) * scale, w * scale, h * scale)
    marks = None
    if landmarks is not None:
        pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
        marks = tuple(float(v) for v in ((pts - (x0, y0)) * scale).ravel())
    return SampleImages(jpeg(thumb), jpeg(context), box, marks)


def look(image: NDArray[np.uint8], box: Box) -> NDArray[np.float32] | None:
    """A face's look: the square-rooted hue-saturation histogram of its box, unit length."""
    import cv2

    x, y, w, h = box
    region = image[y:y + h, x:x + w]
    if region.size == 0:
        return None
    hsv = cv2.cvtColor(region, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [LOOK_BINS, LOOK_BINS], [0, 180, 0, 256]).ravel()
    hist = np.sqrt(hist / max(1.0, float(hist.sum())))
    norm = float(np.linalg.norm(hist))
    return (hist / norm).astype(np.float32) if norm > 0 else None


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
