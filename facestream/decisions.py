"""Why a visit got its name, or none: its decision, kept with it for review.

A visit is judged on its best face: how like the person it was named as it was, who came
next, and the similarity a face needed to be named then (matching.OpenSetPolicy, at the
gallery's size then). The margin says how close the decision came to going the other way;
the review page lists the low ones first (review.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from .matching import Embedding, GalleryIndex

#: A decision closer than this (a difference of cosine similarities) to going the other way
#: is a "low margin" one, worth a look.
LOW_MARGIN: Final = 0.05


@dataclass(frozen=True)
class Decision:
    """Why a visit got its name (or none), judged on its best face."""

    #: The best face's similarity to the person it was named as (None for a stranger).
    score: float | None
    #: The most similar enrolled person other than the one named (for a stranger: the
    #: nearest), and that similarity.
    runner: str | None
    runner_score: float | None
    #: The similarity a face needed to be named then (None with nobody enrolled).
    threshold: float | None

    @property
    def margin(self) -> float | None:
        """How far the decision was from going the other way: a named face's lead over the
        threshold and over the runner-up (the smaller); for a stranger, how far the nearest
        person was below the threshold."""
        if self.threshold is None:
            return None
        if self.score is not None:
            lead = self.score - self.threshold
            if self.runner_score is not None:
                lead = min(lead, self.score - self.runner_score)
            return lead
        return None if self.runner_score is None else self.threshold - self.runner_score

    def row(self) -> tuple[float | None, str | None, float | None, float | None, float | None]:
        """``(score, runner, runner_score, threshold, margin)`` as the visits table has them."""
        return (_rounded(self.score), self.runner, _rounded(self.runner_score),
                _rounded(self.threshold), _rounded(self.margin))


NO_DECISION: Final = Decision(None, None, None, None)


def decide(index: GalleryIndex, embedding: Embedding, person: str | None) -> Decision:
    """The decision on a face named as ``person`` (None: left a stranger) by ``index``."""
    threshold = index.policy.identify_threshold(index.comparisons)
    if not math.isfinite(threshold):
        return NO_DECISION
    score = index.score(embedding, person) if person is not None else None
    runner = next((m for m in index.ranked(embedding, top=3) if m.hash != person), None)
    return Decision(score, runner.hash if runner else None,
                    runner.similarity if runner else None, threshold)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
