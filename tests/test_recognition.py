"""Recognition on real faces with the real models: the code the workers run, in-process.

SFace on YuNet-aligned crops is the default; Dlib on dlib chips stays selectable."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from facestream.config import Config
from facestream.images import ImageError, decode_image
from facestream.matching import face_hash, normalize
from facestream.recognition import CHIP_PADDING, Recognizer, StoredFace, TrackHint

from .conftest import (
    BIDEN,
    BIDEN2,
    FACES,
    GROUP,
    OBAMA,
    OBAMA2,
    OBAMA3,
    RGBA_PNG,
    TALKING_HEAD,
    WEBP_AS_JPG,
    read_video,
)

THRESHOLD = Config().recognition.threshold()
MAX_PIXELS = 40_000_000
NOT_AN_IMAGE = "not an image that can be decoded (JPEG, PNG, WEBP, BMP, TIFF)"


def embed(recognizer: Recognizer, path: Path) -> np.ndarray:
    faces = recognizer.analyze_image(decode_image(path.read_bytes(), MAX_PIXELS))
    assert faces, f"no face found in {path.name}"
    assert faces[0].embedding is not None
    return faces[0].embedding


@pytest.mark.parametrize("which", ["recognizer", "dlib_recognizer"])
def test_same_person_matches_and_different_people_do_not(
    which: str, request: pytest.FixtureRequest
) -> None:
    recognizer: Recognizer = request.getfixturevalue(which)
    threshold = Config().recognition.threshold(recognizer.model)
    obama = [embed(recognizer, p) for p in (OBAMA, OBAMA2, OBAMA3)]
    biden = [embed(recognizer, p) for p in (BIDEN, BIDEN2)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert float(obama[i] @ obama[j]) >= threshold
    assert float(biden[0] @ biden[1]) >= threshold
    for o in obama:
        for b in biden:
            assert float(o @ b) < threshold


def test_embeddings_are_unit_float32_and_hash_is_sha256_of_their_bytes(
    recognizer: Recognizer,
) -> None:
    e = embed(recognizer, OBAMA)
    assert e.dtype == np.float32 and e.shape == (128,)
    assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-5
    assert face_hash(e) == hashlib.sha256(e.astype("<f4").tobytes()).hexdigest()
    assert np.array_equal(normalize(e), e)


def test_multi_face_photo_gives_every_face_largest_first_with_scores(
    recognizer: Recognizer,
) -> None:
    faces = recognizer.analyze_image(decode_image(GROUP.read_bytes(), MAX_PIXELS))
    assert len(faces) == 6
    areas = [f.box[2] * f.box[3] for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert all(f.embedding is not None for f in faces)
    assert all(0.7 <= f.score <= 1.0 for f in faces)


def test_live_frames_embed_only_new_due_or_changed_faces(recognizer: Recognizer) -> None:
    frame = cv2.imread(str(OBAMA))
    first = recognizer.analyze_frame(frame)
    assert first.embedded == len(first.faces) == 1
    (face,) = first.faces
    tracked = [TrackHint(face.box, face.look, due=False)]
    again = recognizer.analyze_frame(frame, tracked)
    assert again.embedded == 0 and again.faces[0].embedding is None
    # Another worker holds the claim on new faces: this one only detects.
    assert recognizer.analyze_frame(frame, embed_new=False).embedded == 0
    # A tracked face due for re-embedding is embedded even then.
    due = recognizer.analyze_frame(frame, [TrackHint(face.box, face.look, True)], False)
    assert due.embedded == 1 and due.faces[0].embedding is not None
    # Somebody else steps into the tracked place: Biden's face, scaled onto Obama's box.
    x, y, w, h = face.box
    other = recognizer.analyze_frame(cv2.imread(str(BIDEN)))
    bx, by, bw, bh = other.faces[0].box
    biden = cv2.imread(str(BIDEN))
    pad_x, pad_y = w // 2, h // 2
    swapped = frame.copy()
    region = biden[max(0, by - bh // 2):by + bh + bh // 2, max(0, bx - bw // 2):bx + bw + bw // 2]
    target = swapped[max(0, y - pad_y):y + h + pad_y, max(0, x - pad_x):x + w + pad_x]
    target[:] = cv2.resize(region, (target.shape[1], target.shape[0]))
    changed = recognizer.analyze_frame(swapped, tracked, embed_new=False)
    assert changed.embedded == 1
    (new,) = changed.faces
    assert new.embedding is not None and float(new.embedding @ face.embedding) < THRESHOLD


def test_the_same_person_moving_keeps_the_look_of_a_tracked_face(
    recognizer: Recognizer,
) -> None:
    """Consecutive frames of a talking head are not re-embedded for a changed look."""
    frames = read_video(TALKING_HEAD, every=3, limit=30)
    first = recognizer.analyze_frame(frames[0]).faces[0]
    hint = TrackHint(first.box, first.look, due=False)
    embedded = 0
    for frame in frames[1:]:
        result = recognizer.analyze_frame(frame, [hint], embed_new=False)
        embedded += result.embedded
        hint = TrackHint(result.faces[0].box, hint.look, False)
    assert embedded == 0  # of 29 analysed frames


def test_stored_samples_embed_again_for_another_model(
    recognizer: Recognizer, dlib_recognizer: Recognizer
) -> None:
    (face,) = recognizer.analyze_image(decode_image(OBAMA2.read_bytes(), MAX_PIXELS))
    assert face.images is not None and face.images.landmarks is not None
    stored = StoredFace(face.images.context, face.images.geometry(), face.images.crop)
    # The same model from the stored context: the embedding it had (up to JPEG).
    (again,) = recognizer.embed_stored([stored])
    assert again is not None and float(again @ face.embedding) > 0.97
    # Dlib, with its own alignment, from the same context: like Dlib on the photo.
    (dlib_emb,) = dlib_recognizer.embed_stored([stored])
    direct = embed(dlib_recognizer, OBAMA2)
    assert dlib_emb is not None and float(dlib_emb @ direct) > 0.97
    # A sample from before contexts existed (a dlib chip only) moves to SFace too.
    import dlib

    rgb = cv2.cvtColor(cv2.imread(str(OBAMA2)), cv2.COLOR_BGR2RGB)
    rect = dlib.get_frontal_face_detector()(rgb, 1)[0]
    shape = dlib_recognizer._shape(rgb, rect)
    chip = dlib.get_face_chip(rgb, shape, size=160, padding=CHIP_PADDING)
    _, legacy = cv2.imencode(".jpg", np.ascontiguousarray(chip[:, :, ::-1]))
    (from_chip,) = recognizer.embed_stored([StoredFace(None, None, legacy.tobytes())])
    assert from_chip is not None and float(from_chip @ face.embedding) > 0.85


def test_charts_and_drawings_are_not_faces(recognizer: Recognizer) -> None:
    """What a worker finds in an upload (``decode_image`` then ``analyze_image``): nothing
    in a line and bar chart, a pie chart, or a smiley. An upload with no face is answered
    422 (test_api.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = []
    for draw in ("lines and bars", "pie"):
        fig, ax = plt.subplots(figsize=(6, 4))
        if draw == "pie":
            ax.pie([3, 2, 1])
            ax.plot([0.2, 0.5, 0.8], [0.3, 0.6, 0.1])
        else:
            ax.plot(np.sin(np.linspace(0, 9, 200)))
            ax.bar(range(10), np.arange(10) % 4)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        charts.append(decode_image(buf.getvalue(), MAX_PIXELS))
    smiley = np.full((400, 400, 3), 255, np.uint8)
    cv2.circle(smiley, (200, 200), 150, (0, 200, 255), -1)
    cv2.circle(smiley, (150, 160), 20, (0, 0, 0), -1)
    cv2.circle(smiley, (250, 160), 20, (0, 0, 0), -1)
    cv2.ellipse(smiley, (200, 240), (70, 40), 0, 0, 180, (0, 0, 0), 8)
    for image in (*charts, smiley):
        assert recognizer.analyze_image(image) == []


def test_lfw_slice_verification_accuracy(recognizer: Recognizer) -> None:
    """40 matched + 40 mismatched pairs of the shared LFW subset at the default threshold.
    (`python -m facestream evaluate` measures all 360 pairs; see the README.)"""
    root = FACES / "lfw"
    lines = (root / "pairs.txt").read_text().strip().splitlines()[1:]
    pairs = lines[:40] + lines[180:220]
    cache: dict[tuple[str, int], np.ndarray | None] = {}

    def emb(name: str, idx: str) -> np.ndarray | None:
        key = (name, int(idx))
        if key not in cache:
            data = (root / name / f"{name}_{int(idx):04d}.jpg").read_bytes()
            faces = recognizer.analyze_image(decode_image(data, MAX_PIXELS))
            cache[key] = faces[0].embedding if faces else None
        return cache[key]

    correct = 0
    for line in pairs:
        p = line.split("\t")
        same = len(p) == 3
        a, b = (emb(p[0], p[1]), emb(p[0], p[2])) if same else (emb(p[0], p[1]), emb(p[2], p[3]))
        # An image without a detected face cannot be verified: it counts as "different".
        predicted_same = a is not None and b is not None and float(a @ b) >= THRESHOLD
        correct += predicted_same == same
    assert correct == len(pairs) == 80  # SFace gets every one of these right


# -- decoding uploads ---------------------------------------------------------------------


def test_decodes_webp_named_jpg_and_rgba_png(recognizer: Recognizer) -> None:
    webp = decode_image(WEBP_AS_JPG.read_bytes(), MAX_PIXELS)
    assert webp.shape == (1800, 1350, 3) and webp.dtype == np.uint8
    rgba = decode_image(RGBA_PNG.read_bytes(), MAX_PIXELS)
    assert rgba.shape == (1200, 626, 3)  # alpha dropped
    assert len(recognizer.analyze_image(rgba)) == 1


def test_rejects_non_images_and_truncated_jpegs() -> None:
    cases = [
        (b"this is not an image", NOT_AN_IMAGE),
        # 300 bytes: the JPEG markers without even the frame header.
        (OBAMA.read_bytes()[:300], NOT_AN_IMAGE),
        # A header and part of the data: would otherwise decode to a half-grey picture.
        (OBAMA.read_bytes()[:-4000],
         "the image data is corrupt or truncated and cannot be decoded"),
        (b"", "the image is empty"),
    ]
    for data, message in cases:
        with pytest.raises(ImageError) as exc:
            decode_image(data, MAX_PIXELS)
        assert (exc.value.status, exc.value.message) == (400, message)


def test_rejects_huge_canvas_before_decoding() -> None:
    buf = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buf, format="PNG")  # ~80 KB file, 81 Mpx canvas
    with pytest.raises(ImageError) as exc:
        decode_image(buf.getvalue(), MAX_PIXELS)
    assert (exc.value.status, exc.value.message) == (
        413, "image is 9000x9000 pixels; the limit is 40000000 pixels")
