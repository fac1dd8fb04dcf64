"""What is drawn onto the stream: each face's box and name label, and the "no signal" frame.

Labels are rendered with Pillow and DejaVu Sans (any script it covers), once per text, colour
and size, and pasted into every frame from a cache: the encoder thread draws only rectangles
and copies small patches.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TypeAlias

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from .privacy import redact_source
from .tracking import FaceView

log = logging.getLogger(__name__)

NO_SIGNAL_SIZE: Final = (640, 360)
KNOWN_COLOR: Final = (80, 200, 60)  # BGR
UNKNOWN_COLOR: Final = (0, 165, 255)

#: Rendered face labels kept (see ``label_patch``); a few hundred small patches, a few MB at most.
LABEL_CACHE_SIZE: Final = 256
#: Longer labels are cut (with an ellipsis) so one odd name cannot make a huge cached patch.
LABEL_MAX_CHARS: Final = 60
#: Space around the text inside a label's box, in pixels.
LABEL_PAD_X: Final = 3
LABEL_PAD_Y: Final = 2
#: Font size in pixels per unit of ``annotate``'s scale: DejaVu Sans at 30 px has the cap height
#: of OpenCV's Hershey simplex at scale 1, which the labels used before.
LABEL_PX_PER_SCALE: Final = 30

LabelFont: TypeAlias = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _scale(frame_width: int) -> float:
    return max(0.45, min(1.2, frame_width / 1000))


def label_font_size(frame_width: int) -> int:
    """The label font size in pixels for a frame ``frame_width`` pixels wide."""
    return max(8, round(LABEL_PX_PER_SCALE * _scale(frame_width)))


@functools.cache
def _font_path() -> str | None:
    """DejaVu Sans as shipped by matplotlib, looked up once; None if it cannot be found.

    Only ``matplotlib`` itself is imported (never pyplot), and only on the first label drawn.
    """
    try:
        import matplotlib

        bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        if bundled.is_file():
            return str(bundled)
        # Unusual installs (e.g. a distribution package that unbundles the fonts): ask the font
        # manager, which may have to scan the system fonts once.
        from matplotlib import font_manager

        found = font_manager.findfont(
            font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=False
        )
        return str(found)
    except Exception as e:  # noqa: BLE001 - no matplotlib, no such font: labels fall back
        log.warning("DejaVu Sans not found (%s); face labels use Pillow's default font", e)
        return None


def _make_font(path: str | None, size: int) -> LabelFont:
    """The TrueType font at ``path`` in ``size`` px, or Pillow's built-in font instead.

    If the font file is missing or unreadable, fall back to ``ImageFont.load_default()`` rather
    than crash the encoder thread: Pillow >= 10.1 gives a scalable font (Latin only) at ``size``;
    older Pillow only a small fixed-size bitmap font.
    """
    if path is not None:
        try:
            return ImageFont.truetype(path, size)
        except OSError as e:
            log.warning("cannot load font %s (%s); face labels use Pillow's default font", path, e)
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1: no size argument
        return ImageFont.load_default()


@functools.lru_cache(maxsize=8)
def _font(size: int) -> LabelFont:
    return _make_font(_font_path(), size)


def _render_label(text: str, color: tuple[int, int, int], font: LabelFont) -> NDArray[np.uint8]:
    """``text`` in black on a ``color`` (BGR) box, as a BGR patch."""
    if not isinstance(font, ImageFont.FreeTypeFont):
        # Pillow's bitmap fallback font only knows Latin-1.
        text = text.encode("latin-1", "replace").decode("latin-1")
    left, _, right, bottom = font.getbbox(text)
    shift = -min(0, math.floor(left))  # glyphs such as "J" reach left of the pen position
    width = max(math.ceil(font.getlength(text)), math.ceil(right)) + shift + 2 * LABEL_PAD_X
    if isinstance(font, ImageFont.FreeTypeFont):
        ascent, descent = font.getmetrics()
        height = ascent + descent  # the same for every text, so labels line up
    else:
        height = math.ceil(bottom)
    height += 2 * LABEL_PAD_Y
    mask = Image.new("L", (max(1, width), max(1, height)), 0)
    ImageDraw.Draw(mask).text((LABEL_PAD_X + shift, LABEL_PAD_Y), text, fill=255, font=font)
    ink = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    patch = np.asarray(color, dtype=np.float32) * (1.0 - ink) + 0.5  # black text, anti-aliased
    return patch.astype(np.uint8)


@functools.lru_cache(maxsize=LABEL_CACHE_SIZE)
def label_patch(text: str, color: tuple[int, int, int], size: int) -> NDArray[np.uint8]:
    """The label ``text`` (black on ``color``, BGR, font ``size`` px) as a read-only BGR patch.

    Labels are rendered with Pillow and DejaVu Sans because OpenCV's Hershey fonts only know
    ASCII ("José" came out as "Jos??"). Pillow is far slower than pasting pixels, so each label
    is rendered once and kept here; ``annotate`` only copies the patch into every frame.
    """
    patch = _render_label(text, color, _font(size))
    patch.flags.writeable = False  # shared by every frame that shows this label
    return patch


def _label_text(face: FaceView) -> str:
    label = face.name if face.known and face.name else f"unknown {face.hash[:8]}"
    label = "".join(ch if ch.isprintable() else " " for ch in label)  # one line, no controls
    if len(label) > LABEL_MAX_CHARS:
        label = label[: LABEL_MAX_CHARS - 1] + "\u2026"
    return label


def _paste(frame: NDArray[np.uint8], patch: NDArray[np.uint8], x: int, y: int) -> None:
    """Copy ``patch`` into ``frame`` with its top-left corner at (x, y), clipped to the frame."""
    fh, fw = frame.shape[:2]
    ph, pw = patch.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + pw, fw), min(y + ph, fh)
    if x0 < x1 and y0 < y1:
        frame[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]


def annotate(frame: NDArray[np.uint8], faces: Sequence[FaceView]) -> None:
    """Draw each face's box and label onto ``frame`` in place.

    The label goes just above the box, or inside it at the top when there is no room above.
    Labels come pre-rendered from ``label_patch`` (any script DejaVu Sans covers); this runs
    for every streamed frame, so it only draws rectangles and pastes small cached patches.
    """
    scale = _scale(frame.shape[1])
    thick = max(1, round(scale * 2))
    size = label_font_size(frame.shape[1])
    for face in faces:
        x, y, w, h = (int(v) for v in face.box)
        color = KNOWN_COLOR if face.known else UNKNOWN_COLOR
        cv2.rectangle(frame, (x, y), (x + w, y + h), color, thick)
        patch = label_patch(_label_text(face), color, size)
        _paste(frame, patch, x, max(0, y - patch.shape[0]))


def no_signal_image(source: str, reason: str) -> NDArray[np.uint8]:
    w, h = NO_SIGNAL_SIZE
    img = np.full((h, w, 3), 40, dtype=np.uint8)
    cv2.putText(img, "NO SIGNAL", (w // 2 - 150, h // 2 - 10), cv2.FONT_HERSHEY_SIMPLEX, 1.6,
                (230, 230, 230), 3, cv2.LINE_AA)
    lines = [redact_source(source)[:70], reason[:70], time.strftime("%H:%M:%S")]
    for i, line in enumerate(lines):
        cv2.putText(img, line, (20, h // 2 + 40 + 26 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (180, 180, 180), 1, cv2.LINE_AA)
    return img
