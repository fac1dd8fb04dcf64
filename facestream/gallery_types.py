"""What the gallery holds and hands out (people, their samples, a sample's images) and
how changing it fails (``GalleryError`` and its kinds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from .db.base import Failure
from .images import SampleImages
from .matching import Embedding

#: The base of every failure reported in one line, the database's ``StorageError`` included:
#: ``except GalleryError`` catches a failing disk too, as it always has. The gallery's own,
#: below, are answered with a 4xx.
GalleryError = Failure


class ModelMismatch(GalleryError):
    pass


class AlreadyEnrolled(GalleryError):
    def __init__(self, existing_hash: str, name: str, similarity: float | None) -> None:
        super().__init__(f"this face is already enrolled as {name!r}")
        self.hash = existing_hash
        self.name = name
        self.similarity = similarity


class BelongsToOther(AlreadyEnrolled):
    def __init__(self, existing_hash: str, name: str, similarity: float | None) -> None:
        super().__init__(existing_hash, name, similarity)
        self.args = (f"this face matches another person, {name!r}",)


class NotFound(GalleryError):
    pass


class NameTaken(GalleryError):
    """Somebody enrolled already has this name: the caller must say whether it is the same
    person (``same_name``: their hash) or another one (``same_name``: ``"new"``)."""

    def __init__(self, name: str, people: list[Person]) -> None:
        who = (f"{people[0].name!r} is enrolled already" if len(people) == 1 else
               f"{len(people)} people named {people[0].name!r} are enrolled already")
        super().__init__(f"{who}: send same_name with the hash of the person this is, or "
                         "\"new\" for another person with the same name")
        self.name = name
        self.people = people


class LastSample(GalleryError):
    pass


@dataclass(frozen=True)
class Sample:
    id: int
    created_at: float
    source: str
    has_crop: bool

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at, "source": self.source,
                "has_crop": self.has_crop}


@dataclass(frozen=True)
class Person:
    hash: str
    name: str
    model: str
    created_at: float
    has_email: bool
    samples: tuple[Sample, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "name": self.name,
            "model": self.model,
            "created_at": self.created_at,
            "has_email": self.has_email,
            "samples": [s.to_json() for s in self.samples],
            "thumbnail": f"/faces/{self.hash}/thumbnail",
        }


@dataclass(frozen=True)
class SampleRecord:
    """A sample with its data, for export and re-embedding."""

    id: int
    person: str
    embedding: Embedding
    crop: bytes | None
    source: str
    created_at: float
    context: bytes | None = None
    geometry: dict[str, Any] | None = None


@dataclass(frozen=True)
class StoredImages:
    """A sample's images: the thumbnail (``crop``), and the context square with the face's
    ``geometry`` in it (box and landmarks) that re-embedding aligns from."""

    crop: bytes | None = None
    context: bytes | None = None
    geometry: dict[str, Any] | None = None

    @classmethod
    def of(cls, images: SampleImages | None) -> StoredImages:
        if images is None:
            return NO_IMAGES
        return cls(images.crop, images.context, images.geometry())


NO_IMAGES: Final = StoredImages()

