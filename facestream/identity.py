"""Embeddings, face hashes and gallery matching: plain numpy, safe on the event loop.

An identity's hash is the hex SHA-256 of the float32 bytes of its L2-normalised enrollment
embedding. Unknown faces get a provisional hash computed the same way from their first
embedding, so enrolling a face from the live view keeps the hash it already had.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

Embedding = NDArray[np.float32]


#: A float32 vector whose norm is this close to 1 is already normalised and kept bit for bit:
#: dividing it by its norm again would flip low bits and so change its hash.
_UNIT_TOLERANCE = 1e-5


def normalize(vector: Sequence[float] | NDArray[np.floating]) -> Embedding:
    """L2-normalise to float32, idempotently; raises ValueError for empty, zero or
    non-finite vectors."""
    arr = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(arr.astype(np.float64))) if arr.size else 0.0
    if arr.size == 0 or not np.isfinite(norm) or norm == 0.0:
        raise ValueError("embedding must be a non-empty, finite, non-zero vector")
    if abs(norm - 1.0) <= _UNIT_TOLERANCE:
        return arr.copy()
    return (arr.astype(np.float64) / norm).astype(np.float32)


def face_hash(embedding: Embedding) -> str:
    """Hex SHA-256 of the float32 bytes of an L2-normalised embedding."""
    return hashlib.sha256(np.ascontiguousarray(embedding, dtype="<f4").tobytes()).hexdigest()


@dataclass(frozen=True)
class Match:
    hash: str
    name: str
    similarity: float


@dataclass(frozen=True)
class Calibration:
    """Where a model's similarities between different people lie: the normal distribution
    that fits the upper tail (the 1e-2 and 1e-3 quantiles) of their cosine similarities.
    Only the tail matters: it sets how often a stranger resembles an enrolled person."""

    mean: float
    std: float

    def quantile(self, exceed: float) -> float:
        """The similarity that two different people exceed with probability ``exceed``."""
        return self.mean + self.std * NormalDist().inv_cdf(1.0 - exceed)

    @classmethod
    def fit(cls, impostor_similarities: NDArray[np.floating]) -> Calibration:
        """Fit the tail of observed different-person similarities (needs thousands)."""
        q2, q3 = np.quantile(np.asarray(impostor_similarities, dtype=np.float64),
                             [1 - 1e-2, 1 - 1e-3])
        z2, z3 = NormalDist().inv_cdf(1 - 1e-2), NormalDist().inv_cdf(1 - 1e-3)
        std = max(1e-6, float(q3 - q2) / (z3 - z2))
        return cls(round(float(q2) - z2 * std, 5), round(std, 5))


@dataclass(frozen=True)
class OpenSetPolicy:
    """Who is this face, or nobody: one decision against every enrolled identity.

    A stranger is named when they resemble *any* of N identities, so one pairwise threshold
    names more strangers the more people are enrolled. This policy keeps the chance that a
    stranger is named at ``stranger_far`` whatever N: each comparison may be passed with
    probability p = 1 - (1 - far) ** (1 / N), and the threshold is the similarity different
    people exceed with probability p under the model's ``calibration``. A best identity must
    also lead the second best by ``margin``. A model without calibration falls back to its
    pairwise ``threshold`` for every N.
    """

    threshold: float
    calibration: Calibration | None = None
    stranger_far: float = 0.01
    margin: float = 0.0

    def identify_threshold(self, comparisons: int, far: float | None = None) -> float:
        """The similarity a face needs to be named among ``comparisons`` candidates."""
        if comparisons <= 0:
            return math.inf
        if self.calibration is None:
            return self.threshold
        target = self.stranger_far if far is None else far
        per_comparison = -math.expm1(math.log1p(-target) / comparisons)
        return min(1.0, self.calibration.quantile(per_comparison))


class GalleryIndex:
    """An immutable snapshot of enrolled embeddings for open-set identification.

    The gallery builds a new index after every committed change and swaps it in, so a
    reader always sees one consistent version without locks.
    """

    def __init__(self, hashes: Sequence[str], names: Sequence[str], matrix: NDArray[np.float32],
                 policy: OpenSetPolicy | None = None, comparisons: int | None = None):
        self.hashes = tuple(hashes)
        self.names = tuple(names)
        self.matrix = matrix.reshape(len(self.hashes), -1) if len(self.hashes) else matrix
        self.policy = policy or OpenSetPolicy(threshold=1.0)
        # Rows grouped by identity: row i scores for identity _group[i], whose first row is
        # _first[_group[i]].
        first: dict[str, int] = {}
        for i, h in enumerate(self.hashes):
            first.setdefault(h, i)
        group = {h: g for g, h in enumerate(first)}
        self._group = np.array([group[h] for h in self.hashes], dtype=np.int64)
        self._first = np.array(list(first.values()), dtype=np.int64)
        self.identities = len(first)
        #: Independent chances a stranger has to match: identities, or samples for "best".
        self.comparisons = self.identities if comparisons is None else comparisons

    @classmethod
    def empty(cls, policy: OpenSetPolicy | None = None) -> GalleryIndex:
        return cls((), (), np.zeros((0, 0), dtype=np.float32), policy)

    @classmethod
    def from_samples(
        cls,
        identities: Sequence[tuple[str, str, Sequence[Embedding]]],
        strategy: str = "centroid",
        policy: OpenSetPolicy | None = None,
    ) -> GalleryIndex:
        """Index identities that each have one or more sample embeddings.

        ``centroid``: one row per identity, the mean of its samples, so an identity scores
        the mean similarity of its samples. Its strangers' scores stay where single samples
        put them (the L2-normalised mean would raise them: on the shared LFW data with two
        samples each it named 1.9% of strangers at a 1% policy, the plain mean 0.6%).
        ``best``: one row per sample, an identity scores its most similar sample (and each
        sample is one more chance for a stranger to match).
        """
        hashes: list[str] = []
        names: list[str] = []
        rows: list[Embedding] = []
        samples = 0
        for face, name, embs in identities:
            if not embs:
                continue
            samples += len(embs)
            if strategy == "centroid":
                picked = [np.mean(np.stack(embs), axis=0).astype(np.float32)]
            elif strategy == "best":
                picked = list(embs)
            else:
                raise ValueError(f"unknown matching strategy {strategy!r}")
            for row in picked:
                hashes.append(face)
                names.append(name)
                rows.append(row)
        if not rows:
            return cls.empty(policy)
        comparisons = samples if strategy == "best" else None
        return cls(hashes, names, np.stack(rows).astype(np.float32), policy, comparisons)

    def __len__(self) -> int:
        return self.identities

    def ranked(self, embedding: Embedding, top: int | None = None) -> list[Match]:
        """Identities with their scores (an identity's best row), best first; all of them,
        or the ``top`` few."""
        if not self.hashes or self.matrix.shape[1] != embedding.shape[0]:
            return []
        sims = self.matrix @ embedding
        if len(self._group) == self.identities:
            scores = sims  # one row per identity
        else:
            scores = np.full(self.identities, -np.inf, dtype=sims.dtype)
            np.maximum.at(scores, self._group, sims)
        if top is not None and top < len(scores):
            picked = np.argpartition(-scores, top - 1)[:top]
            order = picked[np.argsort(-scores[picked], kind="stable")]
        else:
            order = np.argsort(-scores, kind="stable")
        return [Match(self.hashes[self._first[g]], self.names[self._first[g]], float(scores[g]))
                for g in order]

    def best(self, embedding: Embedding) -> Match | None:
        """The most similar identity whatever the similarity, or None for an empty gallery."""
        ranked = self.ranked(embedding, top=1)
        return ranked[0] if ranked else None

    def identify(self, embedding: Embedding) -> Match | None:
        """The enrolled identity this face is, or None for a stranger (see OpenSetPolicy)."""
        ranked = self.ranked(embedding, top=2)
        if not ranked:
            return None
        first = ranked[0]
        if first.similarity < self.policy.identify_threshold(self.comparisons):
            return None
        if len(ranked) > 1 and first.similarity - ranked[1].similarity < self.policy.margin:
            return None
        return first

    def score(self, embedding: Embedding, face: str) -> float | None:
        """The score of identity ``face`` for this face (None if it is not indexed)."""
        rows = [i for i, h in enumerate(self.hashes) if h == face]
        if not rows or self.matrix.shape[1] != embedding.shape[0]:
            return None
        return float(np.max(self.matrix[rows] @ embedding))

    def near_certain(self, embedding: Embedding, far: float) -> Match | None:
        """The identity this face is with a chance of at most ``far`` that it is somebody
        else: the test for "already enrolled", which must not refuse new people."""
        first = self.best(embedding)
        threshold = self.policy.identify_threshold(self.comparisons, far)
        return first if first is not None and first.similarity >= threshold else None
