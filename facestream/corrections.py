"""Correcting a name the system gave: "this face is not X".

It acts on a given face (one in view, or a visit's stored face), never on whatever is in
view when the request arrives. The face is kept as X's negative (``Gallery.add_negative``;
matching.Negatives says how it enters the decision), so that it, and a face near-certainly
the same, is never named X again; X's samples stay, unless the user removes the one that
made the match, which is shown first (``culprit``) and only removed when asked by its id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .gallery_types import GalleryError, LastSample, NotFound, Person
from .matching import Embedding
from .storage import Gallery


@dataclass(frozen=True)
class NotPerson:
    """What "not X" did (or, dry run, would do)."""

    person: Person
    #: X's sample most like the face, with its similarity: the one behind the match (None
    #: when no sample of X is like the face as two photos of one person are).
    culprit: tuple[int, float] | None
    negative: int | None = None
    removed_sample: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"hash": self.person.hash, "name": self.person.name,
                "culprit": None if self.culprit is None else
                {"id": self.culprit[0], "similarity": round(self.culprit[1], 4),
                 "crop": f"/faces/{self.person.hash}/samples/{self.culprit[0]}/crop"},
                "negative": self.negative, "removed_sample": self.removed_sample}


def culprit(gallery: Gallery, person: str, embedding: Embedding) -> tuple[int, float] | None:
    """``person``'s sample most like ``embedding``, if it is as like it as two photos of one
    person are (the model's pairwise threshold)."""
    samples = gallery.sample_embeddings(person)
    if not samples:
        return None
    sid, similarity = max(((sid, float(e @ embedding)) for sid, e in samples.items()),
                          key=lambda s: s[1])
    return (sid, similarity) if similarity >= gallery.policy.threshold else None


async def not_person(gallery: Gallery, person: str, embedding: Embedding,
                     crop: bytes | None, source: str, remove_sample: Any = None,
                     dry_run: bool = False) -> NotPerson:
    """"``embedding`` is not ``person``": record it as their negative and, if
    ``remove_sample`` is one of their samples' ids, remove that sample too."""
    enrolled = gallery.get(person)
    if enrolled is None:
        raise NotFound(f"no enrolled person with hash {person}")
    cause = culprit(gallery, person, embedding)
    if remove_sample is not None and (
            isinstance(remove_sample, bool) or not isinstance(remove_sample, int)
            or all(s.id != remove_sample for s in enrolled.samples)):
        raise GalleryError(f"remove_sample must be the id of one of {enrolled.name!r}'s "
                           "samples")
    if remove_sample is not None and len(enrolled.samples) == 1:
        raise LastSample(f"{enrolled.name!r} has only this one sample, so every match comes "
                         "from it: say \"not\" without removing it, or delete the person")
    if dry_run:
        return NotPerson(enrolled, cause)
    negative = await gallery.add_negative(person, embedding, crop, source)
    if remove_sample is not None:
        await gallery.delete_sample(person, remove_sample)
    return NotPerson(gallery.get(person) or enrolled, cause, negative, remove_sample)
