"""Every way a face becomes a person's sample, in one place.

A face to enroll is a ``Candidate``: its embedding, the images the gallery keeps of it, where
it came from, and the hash it already has if it was seen before (a stranger in the live view
or in history): a person enrolled from it keeps that hash, so their visits become theirs.
Candidates come from an uploaded photo (its one face), the live view (a tracked face's first
or latest look), history (a visit's or a stranger's stored faces, embedded again by the
workers) or a folder of photos (the command line, ``enroll_images``). The Gallery enforces
the rules of what may be enrolled (names, duplicates, models); this module decides which
face is the one to enroll.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from .gallery_types import (
    AlreadyEnrolled,
    GalleryError,
    NameTaken,
    NotFound,
    Person,
    Sample,
    StoredImages,
)
from .history import History, images_of
from .images import ImageError
from .names import clean_name
from .presence import LiveFace
from .recognition import Face, StoredFace, ambiguous
from .storage import Gallery
from .workers import WorkerPool


class NotEnrollable(Exception):
    """No face that can be enrolled (the edge answers ``status`` with the message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Candidate:
    """A face ready to become a sample."""

    embedding: NDArray[np.float32]
    images: StoredImages
    #: "upload", "live", "history" (SOURCES in the gallery).
    source: str
    #: The hash it was seen under, which a person enrolled from it keeps.
    hash: str | None = None


def photo_face(faces: list[Face]) -> Face:
    """The one face of a photo of one person: the largest, unless several are of similar
    size (NotEnrollable 422)."""
    if not faces:
        raise NotEnrollable(422, "no face found in the image")
    if ambiguous(faces):
        raise NotEnrollable(422, f"{len(faces)} faces of similar size found; send a photo of "
                                 "one person")
    return faces[0]


def from_face(face: Face, source: str = "upload") -> Candidate:
    assert face.embedding is not None
    return Candidate(face.embedding, StoredImages.of(face.images), source)


def from_live(live: LiveFace, first: bool) -> Candidate:
    """A tracked face in view: its ``first`` look (a new person keeps the hash the face had in
    view, and a stranger seen before their group's hash and visits), or its latest."""
    if first:
        assert live.first_embedding is not None
        return Candidate(live.first_embedding, StoredImages.of(live.first_images), "live",
                         live.view.hash)
    assert live.latest_embedding is not None
    return Candidate(live.latest_embedding, StoredImages.of(live.latest_images), "live")


class Enrollment:
    """Turns candidates into people and samples in ``gallery``; ``pool`` embeds photos and
    stored faces; ``history`` holds the strangers' stored faces."""

    def __init__(self, gallery: Gallery, pool: WorkerPool, history: History | None = None
                 ) -> None:
        self.gallery, self.pool, self.history = gallery, pool, history

    def same_person(self, name: Any, same_name: Any, renaming: str | None = None
                    ) -> Person | None:
        """Whom a new person called ``name`` is, by ``same_name``: None for a new person (no
        one has that name, or ``same_name`` is "new"), else the person of that name whose
        hash ``same_name`` is. NameTaken when somebody has that name and ``same_name`` says
        nothing: whether it is them is for the user to say. ``renaming``: the hash of the
        person being given the name, who does not count."""
        taken = [p for p in self.gallery.named(clean_name(name)) if p.hash != renaming]
        if not taken or same_name == "new":
            return None
        if same_name is None:
            raise NameTaken(clean_name(name), taken)
        chosen = next((p for p in taken if p.hash == same_name), None)
        if chosen is None:
            raise GalleryError(f"same_name must be \"new\" or the hash of a person named "
                               f"{taken[0].name!r}")
        return chosen

    async def enroll(self, name: Any, candidates: list[Candidate], email: str | None = None,
                     same_name: Any = None) -> Person:
        """A new person from the first candidate; the others become their samples. Raises
        AlreadyEnrolled when the first is near-certainly somebody enrolled. With a name
        somebody has, ``same_name`` says who it is (see ``same_person``): the candidates
        then become samples of that person."""
        joined = self.same_person(name, same_name)
        if joined is None:
            return await self._new_person(name, candidates, email)
        for i, candidate in enumerate(candidates):
            await self.add_sample(joined.hash, candidate, force=i > 0)
        return self.gallery.get(joined.hash) or joined

    async def _new_person(self, name: Any, candidates: list[Candidate], email: str | None,
                          force: bool = False) -> Person:
        """A person from the first candidate (``force``: even if it is near-certainly
        somebody enrolled), the others their samples."""
        first, rest = candidates[0], candidates[1:]
        person = await self.gallery.add(name, first.embedding, email=email, person=first.hash,
                                       images=first.images, source=first.source, force=force)
        for candidate in rest:
            await self.add_sample(person.hash, candidate, force=True)
        return self.gallery.get(person.hash) or person

    async def add_sample(self, person: str, candidate: Candidate, force: bool = False
                         ) -> Sample:
        return await self.gallery.add_sample(person, candidate.embedding, images=candidate.images,
                                             source=candidate.source, force=force)

    async def embedded(self, faces: list[StoredFace], source: str = "history"
                       ) -> list[Candidate | None]:
        """Stored faces embedded again by the workers (None for one that cannot be)."""
        embeddings = await self.pool.embed_stored(faces) if faces else []
        return [None if e is None else Candidate(e, images_of(f), source)
                for f, e in zip(faces, embeddings)]

    async def stranger(self, person: str, name: Any, email: str | None = None,
                       visit: str | None = None, same_name: Any = None) -> Person:
        """Name a stranger from history: their best visit faces (or one visit's) become the
        samples of a new person who keeps the stranger's hash, so their visits are the
        person's from now on. With a name somebody has and ``same_name`` their hash, the
        stranger is them: the faces become their samples, the visits theirs."""
        if self.gallery.get(person) is not None:
            raise GalleryError(f"{person} is enrolled already")
        joined = self.same_person(name, same_name)
        assert self.history is not None
        faces = await self.history.stored_faces(person=None if visit else person, visit=visit)
        if not faces:
            raise NotFound(f"no stored face of {visit or person} to enroll from")
        usable = [c for c in await self.embedded(faces) if c is not None]
        if not usable:
            raise GalleryError("no face could be embedded from the stored images")
        enrolled = await self._new_person(name, [replace(usable[0], hash=person), *usable[1:]],
                                          email, force=joined is not None)
        if joined is None:
            return enrolled
        # Enrolled under their own hash first (their visits become a person's), then merged
        # into the one they are: the samples and visits move, the hash and name stay theirs.
        return await self.gallery.merge(joined.hash, person)


# -- a folder of photos (the command line) ---------------------------------------------------


async def faces_in(pool: WorkerPool, path: Path) -> list[Face] | str:
    """The faces in an image file, or a reason it could not be used."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read ({exc.strerror})"
    try:
        faces = await pool.analyze_image(data)
    except ImageError as exc:
        return exc.message
    return faces if faces else "no face found"


@dataclass
class Enrolled:
    """What enrolling one person's photos did."""

    name: str
    person: Person | None = None
    added: int = 0
    #: Photo -> why it was not used.
    skipped: dict[Path, str] = field(default_factory=dict)
    #: Photos refused as someone enrolled under another name.
    matched: dict[Path, Person] = field(default_factory=dict)
    #: Photos added, on request, as samples of someone enrolled under another name.
    given: dict[Path, Person] = field(default_factory=dict)


async def enroll_images(gallery: Gallery, pool: WorkerPool, name: str, images: Iterable[Path],
                        out: TextIO, bar: tqdm[Any] | None = None,
                        on_match: str = "skip") -> Enrolled:
    """Enroll ``name`` from ``images``: a person of that name gets the faces as samples,
    otherwise the first usable image creates it. A photo with several faces of similar size
    adds the one most like the person's other photos, if any is.

    A photo whose face is near-certainly somebody enrolled under another name is skipped
    (``on_match="skip"``), added as a sample of that person (``"sample"``), or enrolled as a
    new person all the same (``"new"``). Every skipped photo is printed with its reason."""
    result = Enrolled(name, next((i for i in gallery.list() if i.name == name), None))
    several: list[tuple[Path, list[Face]]] = []
    for path in images:
        faces = await faces_in(pool, path)
        if bar is not None:
            bar.update(1)
        if isinstance(faces, str):
            result.skipped[path] = faces
            print(f"skipped {path}: {faces}", file=out)
        elif ambiguous(faces):
            several.append((path, faces))  # once the person is known, pick them out
        else:
            await _enroll_face(gallery, result, path, faces[0], on_match, out)
    for path, faces in several:
        if result.person is None:
            # No other photo to compare with: the person is the one the photo is centred on.
            face = _most_central(path, faces)
            print(f"note: {path} shows {len(faces)} faces of similar size; enrolled the one "
                  "nearest its centre", file=out)
        else:
            face = _most_like(gallery, result.person, faces)
        if face is None:
            why = (f"{len(faces)} faces of similar size, none of them like {name}'s other "
                   "photos")
            result.skipped[path] = why
            print(f"skipped {path}: {why}", file=out)
        else:
            await _enroll_face(gallery, result, path, face, on_match, out)
    return result


def _most_central(path: Path, faces: list[Face]) -> Face:
    """Of faces of similar size, the one nearest the middle of the photo (its subject:
    photos are framed on it)."""
    from PIL import Image

    with Image.open(path) as img:
        width, height = img.size
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF says: rotated a quarter turn
            width, height = height, width

    def distance(face: Face) -> float:
        x, y, w, h = face.box
        return (x + w / 2 - width / 2) ** 2 + (y + h / 2 - height / 2) ** 2

    return min(faces, key=distance)


def _most_like(gallery: Gallery, person: Person | None, faces: list[Face]) -> Face | None:
    """Of several faces in a photo of ``person``, the one that is them (as a 1:1 check
    against their samples), or None."""
    if person is None:
        return None
    scored = [(gallery.index.score(f.embedding, person.hash), f) for f in faces
              if f.embedding is not None]
    known = [(s, f) for s, f in scored if s is not None]
    if not known:
        return None
    score, face = max(known, key=lambda sf: sf[0])
    return face if score >= gallery.policy.threshold else None


async def _enroll_face(gallery: Gallery, result: Enrolled, path: Path, face: Face,
                       on_match: str, out: TextIO) -> None:
    assert face.embedding is not None
    images_ = StoredImages.of(face.images)
    try:
        if result.person is None:
            result.person = await gallery.add(result.name, face.embedding, images=images_,
                                                force=on_match == "new")
        else:
            await gallery.add_sample(result.person.hash, face.embedding, images=images_,
                                     force=on_match == "new")
        result.added += 1
    except AlreadyEnrolled as exc:
        other = gallery.get(exc.hash)
        if on_match == "sample" and other is not None:
            await gallery.add_sample(other.hash, face.embedding, images=images_, force=True)
            result.given[path] = other
            print(f"added {path} to {exc.name!r} ({exc.hash[:12]}): the face is "
                  f"near-certainly theirs (similarity {exc.similarity:.3f})", file=out)
            return
        if other is not None:
            result.matched[path] = other
        why = (f"the face is near-certainly {exc.name!r} ({exc.hash[:12]}, similarity "
               f"{exc.similarity:.3f}); --on-match sample adds it to them, --on-match new "
               "enrolls it anyway")
        result.skipped[path] = why
        print(f"skipped {path}: {why}", file=out)
