"""Recognition on real faces with the real Dlib model: the code the workers run, in-process."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from facestream.config import Config
from facestream.identity import face_hash, normalize
from facestream.recognition import ImageError, Recognizer, decode_image

from .conftest import BIDEN, BIDEN2, FACES, GROUP, OBAMA, OBAMA2, OBAMA3, RGBA_PNG, WEBP_AS_JPG

THRESHOLD = Config().recognition.threshold()
MAX_PIXELS = 40_000_000


def embed(recognizer: Recognizer, path: Path) -> np.ndarray:
    faces = recognizer.analyze_image(decode_image(path.read_bytes(), MAX_PIXELS))
    assert faces, f"no face found in {path.name}"
    assert faces[0].embedding is not None
    return faces[0].embedding


def test_same_person_matches_and_different_people_do_not(recognizer: Recognizer) -> None:
    obama = [embed(recognizer, p) for p in (OBAMA, OBAMA2, OBAMA3)]
    biden = [embed(recognizer, p) for p in (BIDEN, BIDEN2)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert float(obama[i] @ obama[j]) >= THRESHOLD
    assert float(biden[0] @ biden[1]) >= THRESHOLD
    for o in obama:
        for b in biden:
            assert float(o @ b) < THRESHOLD


def test_embeddings_are_unit_float32_and_hash_is_sha256_of_their_bytes(
    recognizer: Recognizer,
) -> None:
    e = embed(recognizer, OBAMA)
    assert e.dtype == np.float32 and e.shape == (128,)
    assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-5
    assert face_hash(e) == hashlib.sha256(e.astype("<f4").tobytes()).hexdigest()
    assert np.array_equal(normalize(e), e)


def test_multi_face_photo_gives_every_face_largest_first(recognizer: Recognizer) -> None:
    faces = recognizer.analyze_image(decode_image(GROUP.read_bytes(), MAX_PIXELS))
    assert len(faces) >= 3
    areas = [f.box[2] * f.box[3] for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert all(f.embedding is not None for f in faces)


def test_live_frames_skip_embedding_of_tracked_faces(recognizer: Recognizer) -> None:
    frame = cv2.imread(str(OBAMA))
    first = recognizer.analyze_frame(frame, [])
    assert first.embedded == len(first.faces) >= 1
    boxes = [f.box for f in first.faces]
    again = recognizer.analyze_frame(frame, skip=boxes)
    assert again.embedded == 0 and len(again.faces) == len(first.faces)
    assert all(f.embedding is None for f in again.faces)
    # Another worker holds the claim on new faces: this one only detects.
    assert recognizer.analyze_frame(frame, embed_new=False).embedded == 0
    # A tracked face due for re-embedding is embedded even then.
    due = recognizer.analyze_frame(frame, due=boxes[:1], embed_new=False)
    assert due.embedded == 1 and due.faces[0].embedding is not None


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
    assert correct / len(pairs) >= 0.95


# -- decoding uploads ---------------------------------------------------------------------


def test_decodes_webp_named_jpg_and_rgba_png(recognizer: Recognizer) -> None:
    webp = decode_image(WEBP_AS_JPG.read_bytes(), MAX_PIXELS)
    assert webp.ndim == 3 and webp.shape[2] == 3
    rgba = decode_image(RGBA_PNG.read_bytes(), MAX_PIXELS)
    assert rgba.shape[2] == 3
    assert len(recognizer.analyze_image(rgba)) == 1


def test_rejects_non_images_and_truncated_jpegs() -> None:
    with pytest.raises(ImageError) as exc:
        decode_image(b"this is not an image", MAX_PIXELS)
    assert exc.value.status == 400
    for truncated in (OBAMA.read_bytes()[:300], OBAMA.read_bytes()[:-4000]):
        with pytest.raises(ImageError) as exc:
            decode_image(truncated, MAX_PIXELS)
        assert exc.value.status == 400
    with pytest.raises(ImageError):
        decode_image(b"", MAX_PIXELS)


def test_rejects_huge_canvas_before_decoding() -> None:
    buf = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buf, format="PNG")  # ~80 KB file, 81 Mpx canvas
    with pytest.raises(ImageError) as exc:
        decode_image(buf.getvalue(), MAX_PIXELS)
    assert exc.value.status == 413
    assert "9000x9000" in exc.value.message
