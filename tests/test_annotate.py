"""Face labels on the stream: drawn in any script DejaVu Sans covers, cheaply, never off-frame."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import ImageFont

from facestream.overlay import (
    KNOWN_COLOR,
    LABEL_CACHE_SIZE,
    UNKNOWN_COLOR,
    _make_font,
    _render_label,
    annotate,
    label_font_size,
    label_patch,
)
from facestream.tracking import FaceView

W, H = 1280, 720


def blank() -> NDArray[np.uint8]:
    return np.full((H, W, 3), 90, dtype=np.uint8)


def known(name: str, box: tuple[int, int, int, int]) -> FaceView:
    return FaceView(hash="a1b2c3d4e5f60718", name=name, known=True, similarity=0.8, box=box)


def ink(patch: NDArray[np.uint8]) -> int:
    """How many pixels of a label patch are dark text rather than the coloured box."""
    return int((patch.max(axis=2) < 40).sum())


@pytest.mark.parametrize("name", ["José Müller", "Анна Каренина", "Ελένη Παπαδοπούλου"])
def test_label_is_the_rendered_patch_above_the_box(name: str) -> None:
    frame = blank()
    x, y = 200, 300
    annotate(frame, [known(name, (x, y, 150, 160))])

    patch = label_patch(name, KNOWN_COLOR, label_font_size(W))
    ph, pw = patch.shape[:2]
    assert patch.dtype == np.uint8 and patch.shape[2] == 3
    assert ink(patch) > 0
    # Exactly the cached patch, just above the box, left-aligned with it.
    assert np.array_equal(frame[y - ph : y, x : x + pw], patch)
    # Nothing else was painted above the label.
    assert (frame[: y - ph] == 90).all()


def test_accented_and_cyrillic_glyphs_are_drawn_not_question_marks() -> None:
    size = label_font_size(W)

    def render(text: str) -> NDArray[np.uint8]:
        return label_patch(text, KNOWN_COLOR, size)

    for text, ascii_only in [
        ("José", "Jos?"),
        ("José Müller", "Jos? M?ller"),
        ("Анна Каренина", "???? ?????????"),
    ]:
        assert not np.array_equal(render(text), render(ascii_only)), text
    # The accents themselves are drawn: "José" is not "Jose".
    assert not np.array_equal(render("José"), render("Jose"))
    # Cyrillic comes from real glyphs, not the font's "missing glyph" box: DejaVu Sans draws
    # Cyrillic А exactly like Latin A, while characters it lacks all get the same empty box.
    assert np.array_equal(render("\u0410"), render("A"))
    missing = "\ue000" * 4
    assert not np.array_equal(render("Анна"), render(missing))


def test_unknown_face_label() -> None:
    frame = blank()
    face = FaceView(hash="0f9e8d7c6b5a4321", name=None, known=False, similarity=None,
                    box=(600, 200, 100, 100))
    annotate(frame, [face])
    patch = label_patch("unknown 0f9e8d7c", UNKNOWN_COLOR, label_font_size(W))
    ph, pw = patch.shape[:2]
    assert np.array_equal(frame[200 - ph : 200, 600 : 600 + pw], patch)
    # The box outline is drawn in the face's colour.
    assert tuple(frame[250, 600]) == UNKNOWN_COLOR


def test_label_goes_inside_the_box_at_the_top_when_there_is_no_room_above() -> None:
    frame = blank()
    annotate(frame, [known("José Müller", (40, 5, 200, 200))])
    patch = label_patch("José Müller", KNOWN_COLOR, label_font_size(W))
    ph, pw = patch.shape[:2]
    assert np.array_equal(frame[0:ph, 40 : 40 + pw], patch)


@pytest.mark.parametrize(
    "box",
    [
        (0, 0, 120, 120),  # touches the top-left corner
        (W - 120, H - 120, 120, 120),  # touches the bottom-right corner
        (0, 0, W, H),  # the whole frame
        (W - 40, 0, 200, 200),  # at the top edge, running off the right
        (-60, -40, 150, 150),  # partly outside at the top left
        (W - 30, H - 20, 300, 300),  # partly outside at the bottom right
        (W + 50, H + 50, 100, 100),  # entirely outside
        (-500, -500, 100, 100),
    ],
)
def test_faces_at_or_over_the_frame_edges(box: tuple[int, int, int, int]) -> None:
    frame = blank()
    annotate(frame, [known("Анна Каренина", box), known("José Müller", box)])
    assert frame.shape == (H, W, 3)
    assert frame.dtype == np.uint8


def test_label_clipped_at_the_right_edge_is_the_patch_cut_short() -> None:
    frame = blank()
    x = W - 40
    annotate(frame, [known("José Müller", (x, 0, 200, 200))])
    patch = label_patch("José Müller", KNOWN_COLOR, label_font_size(W))
    ph = patch.shape[0]
    assert np.array_equal(frame[0:ph, x:W], patch[:, : W - x])


def test_small_frames_and_odd_names() -> None:
    frame = np.zeros((90, 160, 3), dtype=np.uint8)
    faces = [
        known("José\nMüller\t\x00", (10, 30, 40, 40)),
        known("Ж" * 500, (5, 5, 20, 20)),
        known(" ", (100, 50, 30, 30)),
    ]
    annotate(frame, faces)
    assert frame.shape == (90, 160, 3)
    # Very long names are cut (with an ellipsis), so no label patch grows without bound.
    frame = np.zeros((90, 160, 3), dtype=np.uint8)
    annotate(frame, [known("Ж" * 500, (5, 5, 20, 20))])
    cut = label_patch("Ж" * 59 + "\u2026", KNOWN_COLOR, label_font_size(160))
    assert cut.shape[1] < 1000
    assert np.array_equal(frame[0 : cut.shape[0], 5:160], cut[:, :155])


def test_cached_patches_are_read_only() -> None:
    patch = label_patch("José Müller", KNOWN_COLOR, label_font_size(W))
    with pytest.raises(ValueError):
        patch[0, 0] = 0


def test_label_cache_is_bounded() -> None:
    frame = blank()
    for i in range(1000):
        annotate(frame, [known(f"Person {i} Müller", (100 + i % 500, 200, 80, 80))])
        assert label_patch.cache_info().currsize <= LABEL_CACHE_SIZE
    info = label_patch.cache_info()
    assert info.maxsize == LABEL_CACHE_SIZE
    assert info.currsize == LABEL_CACHE_SIZE


def test_fallback_font_when_the_font_file_is_missing() -> None:
    """Without DejaVu Sans, labels use Pillow's default font instead of failing."""
    font = _make_font("/nonexistent/DejaVuSans.ttf", 24)
    patch = _render_label("José Müller", KNOWN_COLOR, font)
    assert patch.ndim == 3 and patch.shape[2] == 3 and patch.dtype == np.uint8
    assert ink(patch) > 0
    assert _render_label("Анна", KNOWN_COLOR, _make_font(None, 24)).shape[2] == 3


def test_bitmap_fallback_font_does_not_fail_on_non_latin_names() -> None:
    """Pillow without FreeType only has a Latin-1 bitmap font; other letters become "?"."""
    load_bitmap = getattr(ImageFont, "load_default_imagefont", None)
    if load_bitmap is None:
        pytest.skip("this Pillow has no separate bitmap default font")
    font = load_bitmap()
    for text in ["José Müller", "Анна Каренина"]:
        patch = _render_label(text, UNKNOWN_COLOR, font)
        assert patch.ndim == 3 and patch.shape[2] == 3
        assert ink(patch) > 0
