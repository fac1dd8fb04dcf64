"""Reviewing what the system decided, visit by visit, and correcting it.

Every visit keeps its decision (decisions.py): how like the person it was named as its best
face was, the runner-up, and the threshold a face needed then. History stores it with the
visit; the review page lists visits with it, lowest margin first when asked, and acts on
the ones the user picks (``Reviewer``):

- ``is``: this is X. The visit becomes X's and its face one of X's samples; if it was named
  as somebody else, the face is also kept as that person's negative (corrections.not_person).
- ``not``: this is not the person it was named as (their negative; the visit a stranger's).
- ``new``: a new person, named. A stranger's visit enrolls the stranger; a misnamed visit
  is first said not to be the person it was named as.
- ``ignore``: right as it is; the visit is marked reviewed and leaves the "to review" list.
- ``split``: these visits of a stranger's group are somebody else: they become a group of
  their own (History.split).

Every action marks its visits reviewed. Each visit is done on its own: one that fails (a
stranger who cannot be embedded, a name taken) says why, and the others still go ahead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .corrections import not_person
from .gallery_types import GalleryError, NotFound
from .matching import face_hash

if TYPE_CHECKING:
    from .enrollment import Enrollment
    from .history import History, Visit

#: Visits one request may act on.
MAX_VISITS: Final = 200
ACTIONS: Final = ("is", "not", "new", "ignore", "split")


@dataclass(frozen=True)
class Outcome:
    """What an action did to one visit (``error`` instead when it could not)."""

    visit: str
    done: str = ""
    person: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"visit": self.visit}
        if self.error is not None:
            out["error"] = self.error
        else:
            out.update(done=self.done, hash=self.person)
        return out


class Reviewer:
    """The review actions, on visits chosen by id (see the module's docstring)."""

    def __init__(self, history: History, enrollment: Enrollment) -> None:
        self.history = history
        self.gallery = history.gallery
        self.enrollment = enrollment

    async def act(self, action: str, visits: list[str], body: dict[str, Any]
                  ) -> list[Outcome]:
        if action not in ACTIONS:
            raise GalleryError(f"action must be one of {', '.join(ACTIONS)}")
        if action == "split":
            return await self._split(visits)
        if action == "new":  # a name somebody has: asked before any change (NameTaken)
            self.enrollment.same_person(body.get("name"), body.get("same_name"))
        person = body.get("hash")
        if action == "is" and (not isinstance(person, str) or self.gallery.get(person) is None):
            raise NotFound(f"\"is\" needs the hash of an enrolled person, got {person!r}")
        outcomes = []
        for vid in visits:
            try:
                visit = await self.history.visit(vid)
                if action == "is":
                    outcome = await self._is(visit, str(person))
                elif action == "not":
                    # Removing the sample behind the match is asked of one visit at a time.
                    outcome = await self._not(visit, body.get("remove_sample")
                                              if len(visits) == 1 else None)
                elif action == "new":
                    outcome = await self._new(visit, body.get("name"), body.get("same_name"))
                    if outcome.person is not None and self.gallery.get(outcome.person):
                        # The visits after the first are this new person's too.
                        action, person = "is", outcome.person
                else:
                    outcome = Outcome(vid, "ignored", visit.person)
            except GalleryError as exc:
                outcomes.append(Outcome(vid, error=str(exc)))
                continue
            await self.history.reviewed([vid])
            outcomes.append(outcome)
        return outcomes

    async def _candidate(self, visit: Visit) -> Any:
        faces = await self.history.stored_faces(visit=visit.id)
        (candidate,) = await self.enrollment.embedded(faces[:1]) if faces else (None,)
        if candidate is None:
            raise GalleryError(f"no face of visit {visit.id} is stored that can be embedded")
        return candidate

    async def _is(self, visit: Visit, person: str) -> Outcome:
        enrolled = self.gallery.get(person)
        assert enrolled is not None
        if visit.known and visit.person == person:
            return Outcome(visit.id, "confirmed", person)
        candidate = await self._candidate(visit)
        if visit.known and self.gallery.get(visit.person) is not None:
            await not_person(self.gallery, visit.person, candidate.embedding,
                             candidate.images.crop, "review")
        await self.enrollment.add_sample(person, candidate, force=True)
        await self.history.assign(visit.id, person, enrolled.name)
        return Outcome(visit.id, "sample added", person)

    async def _not(self, visit: Visit, remove_sample: Any = None) -> Outcome:
        if not visit.known or self.gallery.get(visit.person) is None:
            raise GalleryError(f"visit {visit.id} is not named as anybody enrolled")
        if visit.left_at is None:
            raise GalleryError(f"visit {visit.id} is under way: say \"not {visit.name}\" of "
                               "the face in the live view")
        candidate = await self._candidate(visit)
        done = await not_person(self.gallery, visit.person, candidate.embedding,
                                candidate.images.crop, "review", remove_sample)
        stranger = face_hash(candidate.embedding)
        await self.history.unname(visit.id, stranger)
        removed = "" if done.removed_sample is None else \
            f" (sample #{done.removed_sample} removed)"
        return Outcome(visit.id, f"not {visit.name}{removed}", stranger)

    async def _new(self, visit: Visit, name: Any, same_name: Any) -> Outcome:
        if not isinstance(name, str) or not name.strip():
            raise GalleryError("a new person needs a name")
        if visit.known and self.gallery.get(visit.person) is not None:
            await self._not(visit)  # the visit is now the stranger of its own face
        else:
            # Only this visit is the new person, not every visit of its stranger's group.
            candidate = await self._candidate(visit)
            await self.history.split(visit.person, [visit.id], [candidate.embedding])
        visit = await self.history.visit(visit.id)
        person = await self.enrollment.stranger(visit.person, name, visit=visit.id,
                                                same_name=same_name)
        return Outcome(visit.id, "enrolled as " + person.name, person.hash)

    async def keep_only(self, group: str, kept: list[str]) -> int:
        """Naming stranger ``group`` with only the visits ``kept``: each of their other
        visits becomes a stranger's group of its own first (they may be anybody). Returns
        how many were split off."""
        ids = set(kept)
        visits, cursor = [], None
        while True:
            page, cursor = await self.history.visits(group, False, cursor=cursor, limit=200)
            visits += page
            if cursor is None:
                break
        if not ids <= {v.id for v in visits}:
            raise GalleryError(f"visits must be visits of unknown {group[:8]}")
        others = [v for v in visits if v.id not in ids]
        for visit in others:
            candidate = await self._candidate(visit)
            await self.history.split(group, [visit.id], [candidate.embedding])
        return len(others)

    async def _split(self, visits: list[str]) -> list[Outcome]:
        group, embeddings = None, []
        for vid in visits:
            visit = await self.history.visit(vid)
            if visit.known:
                raise GalleryError(f"visit {vid} is of {visit.name!r}: only a stranger's "
                                   "visits are split off their group")
            if group not in (None, visit.person):
                raise GalleryError("the visits split off must all be of one stranger's group")
            group = visit.person
            embeddings.append((await self._candidate(visit)).embedding)
        if group is None:
            raise GalleryError("no visits to split off")
        new = await self.history.split(group, visits, embeddings)
        await self.history.reviewed(visits)
        return [Outcome(vid, "split off", new) for vid in visits]
