"""Embeddings, face hashes and gallery matching: plain numpy, safe on the event loop.

An identity's hash is the hex SHA-256 of the float32 bytes of its L2-normalised enrollment
embedding. Unknown faces get a provisional hash computed the same way from their first
embedding, so enrolling a face from the live view keeps the hash it already had.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

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


class GalleryIndex:
    """An immutable snapshot of enrolled embeddings for nearest-neighbour matching.

    The gallery builds a new index after every committed change and swaps it in, so a
    reader always sees one consistent version without locks.
    """

    def __init__(self, hashes: Sequence[str], names: Sequence[str], matrix: NDArray[np.float32]):
        self.hashes = tuple(hashes)
        self.names = tuple(names)
        self.matrix = matrix.reshape(len(self.hashes), -1) if len(self.hashes) else matrix

    @classmethod
    def empty(cls) -> GalleryIndex:
        return cls((), (), np.zeros((0, 0), dtype=np.float32))

    @classmethod
    def from_samples(
        cls,
        identities: Sequence[tuple[str, str, Sequence[Embedding]]],
        strategy: str = "best",
    ) -> GalleryIndex:
        """Index identities that each have one or more sample embeddings.

        ``best``: one row per sample, an identity scores its most similar sample.
        ``centroid``: one row per identity, the L2-normalised mean of its samples.
        """
        hashes: list[str] = []
        names: list[str] = []
        rows: list[Embedding] = []
        for face, name, samples in identities:
            if not samples:
                continue
            if strategy == "centroid":
                picked = [normalize(np.mean(np.stack(samples), axis=0))]
            elif strategy == "best":
                picked = list(samples)
            else:
                raise ValueError(f"unknown matching strategy {strategy!r}")
            for row in picked:
                hashes.append(face)
                names.append(name)
                rows.append(row)
        if not rows:
            return cls.empty()
        return cls(hashes, names, np.stack(rows).astype(np.float32))

    def __len__(self) -> int:
        return len(set(self.hashes))

    def best(self, embedding: Embedding) -> Match | None:
        """The most similar identity whatever the similarity, or None for an empty gallery."""
        if not self.hashes or self.matrix.shape[1] != embedding.shape[0]:
            return None
        sims = self.matrix @ embedding
        i = int(np.argmax(sims))
        return Match(self.hashes[i], self.names[i], float(sims[i]))

    def match(self, embedding: Embedding, threshold: float) -> Match | None:
        """The most similar identity if it reaches ``threshold``."""
        best = self.best(embedding)
        return best if best is not None and best.similarity >= threshold else None
