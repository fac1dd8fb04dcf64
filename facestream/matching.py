"""Embeddings, face hashes and gallery matching: plain numpy, safe on the event loop.

A person's hash is the hex SHA-256 of the float32 bytes of their L2-normalised enrollment
embedding. Unknown faces get a provisional hash computed the same way from their first
embedding, so enrolling a face from the live view keeps the hash it already had.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Final, NamedTuple

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
    """Who is this face, or nobody: one decision against every enrolled person.

    A stranger is named when they resemble *any* of N people, so one pairwise threshold
    names more strangers the more people are enrolled. This policy keeps the chance that a
    stranger is named at ``stranger_far`` whatever N: each comparison may be passed with
    probability p = 1 - (1 - far) ** (1 / N), and the threshold is the similarity different
    people exceed with probability p under the model's ``calibration``. A best person must
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


@dataclass(frozen=True)
class Negatives:
    """Faces the user said are not a person ("not X"), by that person's hash: unit rows.

    A negative is another person competing with X: a face is not named X when it is at
    least as like one of X's negatives as like X, and like it as two photos of one person
    are (the model's pairwise ``threshold``). X's own faces, more like X than like a face
    that merely resembled X, keep their name; the face marked and faces near-certainly the
    same lose it."""

    rows: Mapping[str, NDArray[np.float32]] = field(default_factory=dict)
    threshold: float = 1.0

    def vetoes(self, person: str, embedding: Embedding, score: float) -> bool:
        """Whether ``embedding``, scoring ``score`` against ``person``, is one of their
        negatives' faces."""
        rows = self.rows.get(person)
        if rows is None or rows.shape[1] != embedding.shape[0]:
            return False
        closest = float(np.max(rows @ embedding))
        return closest >= self.threshold and closest >= score


#: From this many rows on, a top-k query screens a compact copy of the rows with faiss and
#: rescores the few candidates exactly (see GalleryIndex.ranked). Below it, one float32 matrix
#: product is as fast (about 1 ms for 32,000 rows).
SCREEN_ROWS: Final = 32_768

#: The screen's copy: "int8" or "float16" (both measured in bench/gallery_scale.py).
SCREEN_KIND: str = "int8"

#: Float32 summation, in the screen and in the exact product, moves a similarity by less.
_SUM_ERROR: Final = 1e-4


class _Entry(NamedTuple):
    """Where one person lives in the rows: their group and their rows."""

    group: int
    rows: tuple[int, ...]


class _Base(NamedTuple):
    """The people of a fresh build: ``hashes[group]`` is the group's person, its rows
    are ``order[start[group]:start[group + 1]]`` (arrays rather than a million tuples)."""

    groups: dict[str, int]
    order: NDArray[np.int64]
    start: NDArray[np.int64]


class _Rows:
    """Append-only storage shared by a chain of GalleryIndex snapshots.

    Rows are only ever appended; a snapshot sees the first ``n`` of them (through views taken
    when it was made), so later appends cannot change what an older snapshot answers. When
    the arrays are full they are copied into larger ones: older snapshots keep the old ones.
    Groups (a person's hash and name) are appended the same way. The faiss screen holds
    every appended row; snapshots drop candidates beyond their own ``n``. Rows and the screen
    are changed only by ``GalleryIndex.replaced``/``removed``, and (faiss being a mutable C++
    index) those must not run while another thread queries the same chain: in facestream the
    gallery applies changes on the event loop, where the live pipeline also reads.
    """

    def __init__(self, dim: int, capacity: int) -> None:
        self.dim = dim
        self.vectors = np.empty((max(capacity, 16), dim), dtype=np.float32)
        self.groups = np.empty(max(capacity, 16), dtype=np.int64)
        self.n = 0
        self.hashes: list[str] = []
        self.names: list[str] = []
        self.screen: _Screen | None = None

    def append(self, vectors: NDArray[np.float32], groups: NDArray[np.int64]) -> None:
        k = len(vectors)
        if self.n + k > len(self.vectors):
            size = max(self.n + k, 2 * len(self.vectors))
            grown = np.empty((size, self.dim), dtype=np.float32)
            grown[:self.n] = self.vectors[:self.n]
            grouped = np.empty(size, dtype=np.int64)
            grouped[:self.n] = self.groups[:self.n]
            self.vectors, self.groups = grown, grouped
        self.vectors[self.n:self.n + k] = vectors
        self.groups[self.n:self.n + k] = groups
        self.n += k
        if self.screen is not None:
            self.screen.add(vectors)
        elif self.n >= SCREEN_ROWS:
            self.screen = _screen(self.vectors[:self.n])

    def add_group(self, person: str, name: str) -> int:
        self.hashes.append(person)
        self.names.append(name)
        return len(self.hashes) - 1


class _Screen:
    """A faiss scan of a compact copy of the rows that proposes candidates, with a bound on
    how far its similarities can be from the exact ones.

    ``int8``: each component times 127, rounded (rows have components in [-1, 1]), and the
    query scaled to fill [-127, 127] and rounded, multiplied in integers (faiss's
    QT_8bit_direct_signed). With X = 127 x + a and Q = s q + b, |a_i|, |b_i| <= 1/2:
    |X.Q / (127 s) - x.q| <= |x|_1 / (2 s) + |q|_1 / 254 + n / (4 * 127 s), with |x|_1 at
    most the largest row's L1 norm. Half of float16's bytes to read.
    ``float16``: each stored component is rounded by at most 2**-11 of itself, so by
    Cauchy-Schwarz a similarity with rows of norm <= 1 moves by at most 2**-11 |q|.
    """

    def __init__(self, dim: int, kind: str) -> None:
        import faiss  # type: ignore[import-untyped]

        # One face is one query: faiss would split its scan over OpenMP threads, which on
        # cores busy with the recognition workers made it 2-3 times slower
        # (bench/gallery_scale.py). Process-wide; facestream uses faiss for nothing else.
        faiss.omp_set_num_threads(1)
        self.kind = kind
        quantizer = (faiss.ScalarQuantizer.QT_8bit_direct_signed if kind == "int8"
                     else faiss.ScalarQuantizer.QT_fp16)
        self.index = faiss.IndexScalarQuantizer(dim, quantizer, faiss.METRIC_INNER_PRODUCT)
        self.l1 = 0.0  # the largest L1 norm of a row
        self.usable = True  # False once a row does not fit the int8 range: scan exactly

    def add(self, vectors: NDArray[np.float32]) -> None:
        for start in range(0, len(vectors), 1 << 16):  # bounded temporary copies
            block = np.asarray(vectors[start:start + (1 << 16)], dtype=np.float32)
            if not len(block):
                continue
            self.l1 = max(self.l1, float(np.abs(block).sum(axis=1).max()))
            if self.kind == "int8":
                self.usable = self.usable and float(np.abs(block).max()) <= 1.0
                block = np.round(block * 127.0)
            self.index.add(np.ascontiguousarray(block, dtype=np.float32))

    def search(self, q: Embedding, k: int) -> tuple[NDArray[np.float64], NDArray[np.int64],
                                                     float]:
        """The ``k`` rows the screen scores highest for ``q`` (best first, -1 when there
        are fewer rows), their screened similarities, and the bound on their error."""
        if self.kind == "int8":
            scale = 127.0 / max(float(np.abs(q).max()), 1e-12)
            approx, ids = self.index.search(np.round(q * scale)[None, :].astype(np.float32), k)
            sims = approx[0].astype(np.float64) / (127.0 * scale)
            error = (self.l1 / (2 * scale) + float(np.abs(q).sum()) / 254.0
                     + len(q) / (4 * 127.0 * scale))
        else:
            approx, ids = self.index.search(q[None, :], k)
            sims = approx[0].astype(np.float64)
            error = 2.0**-11 * float(np.linalg.norm(q))
        return sims, ids[0], error + _SUM_ERROR


def _screen(vectors: NDArray[np.float32]) -> _Screen | None:
    """A screen of ``vectors`` (SCREEN_KIND), or None without faiss."""
    try:
        screen = _Screen(vectors.shape[1], SCREEN_KIND)
    except ImportError:  # pragma: no cover - faiss is a dependency; exact matching still works
        return None
    screen.add(vectors)
    return screen


def _means(owner: NDArray[np.int64], samples: NDArray[np.float32], count: int
           ) -> NDArray[np.float32]:
    """Each owner's mean sample, as ``np.mean(its samples, axis=0)`` computes it (float32
    rows summed in order, then divided), for all owners with the same sample count at once."""
    counts = np.bincount(owner, minlength=count)
    order = np.argsort(owner, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    means = np.empty((count, samples.shape[1]), dtype=np.float32)
    for c in np.unique(counts).tolist():
        owners = np.flatnonzero(counts == c)
        total = samples[order[starts[owners]]]  # (a copy: fancy indexing)
        for i in range(1, c):
            total += samples[order[starts[owners] + i]]
        means[owners] = total / np.float32(c) if c > 1 else total
    return means


class GalleryIndex:
    """An immutable snapshot of enrolled embeddings for open-set identification.

    Matching is exact: the answers are those of one float32 product with every row. Large
    galleries screen an int8 copy first and rescore only the rows that could be in the top
    few (measured in bench/gallery_scale.py: 1,000,000 people in 6.4 ms p50, 6.8 ms p99,
    rather than numpy's 39 ms). A change (``replaced``, ``removed``) returns a new snapshot in milliseconds: rows are
    appended and old ones hidden, never rewritten, so a reader holding an older snapshot
    keeps getting that snapshot's answers without locks. When hidden rows pile up, a change
    rebuilds the rows compactly.
    """

    strategy: str
    policy: OpenSetPolicy
    people: int
    #: Independent chances a stranger has to match: people, or samples for "best".
    comparisons: int
    #: Faces marked "not X" (see Negatives); every snapshot made from this one keeps them.
    negatives: Negatives = Negatives()

    def __init__(self, hashes: Sequence[str], names: Sequence[str], matrix: NDArray[np.float32],
                 policy: OpenSetPolicy | None = None, comparisons: int | None = None,
                 strategy: str = "centroid"):
        """Index ``matrix``'s rows, row i for person ``hashes[i]`` (repeated hashes: a
        person scores its best row). ``strategy`` says how ``replaced`` turns samples into
        rows; ``comparisons`` defaults to the number of people."""
        owners: dict[str, int] = {}
        for h in hashes:
            owners.setdefault(h, len(owners))
        first_name = {h: n for h, n in reversed(list(zip(hashes, names)))}
        matrix = np.asarray(matrix, dtype=np.float32).reshape(len(hashes), -1) if hashes \
            else np.zeros((0, 0), dtype=np.float32)
        self._build(list(owners), [first_name[h] for h in owners],
                    np.array([owners[h] for h in hashes], dtype=np.int64), matrix,
                    policy, strategy)
        if comparisons is not None:
            self.comparisons = comparisons

    @classmethod
    def empty(cls, policy: OpenSetPolicy | None = None, strategy: str = "centroid"
              ) -> GalleryIndex:
        return cls((), (), np.zeros((0, 0), dtype=np.float32), policy, strategy=strategy)

    @classmethod
    def from_samples(
        cls,
        people: Sequence[tuple[str, str, Sequence[Embedding]]],
        strategy: str = "centroid",
        policy: OpenSetPolicy | None = None,
    ) -> GalleryIndex:
        """Index people that each have one or more sample embeddings.

        ``centroid``: one row per person, the mean of its samples, so a person scores
        the mean similarity of its samples. Its strangers' scores stay where single samples
        put them (the L2-normalised mean would raise them: on the shared LFW data with two
        samples each it named 1.9% of strangers at a 1% policy, the plain mean 0.6%).
        ``best``: one row per sample, a person scores its most similar sample (and each
        sample is one more chance for a stranger to match).
        """
        kept = [(key, name, embs) for key, name, embs in people if len(embs)]
        owner = np.repeat(np.arange(len(kept), dtype=np.int64), [len(e) for _, _, e in kept])
        vectors = (np.stack([e for _, _, embs in kept for e in embs]).astype(np.float32)
                   if kept else np.zeros((0, 0), dtype=np.float32))
        return cls.from_arrays([f for f, _, _ in kept], [n for _, n, _ in kept], owner,
                               vectors, strategy, policy)

    @classmethod
    def from_arrays(
        cls,
        hashes: Sequence[str],
        names: Sequence[str],
        owner: NDArray[np.integer],
        samples: NDArray[np.float32],
        strategy: str = "centroid",
        policy: OpenSetPolicy | None = None,
    ) -> GalleryIndex:
        """``from_samples`` for large galleries: sample i (row i of ``samples``) belongs to
        person ``owner[i]``, an index into ``hashes`` and ``names``; every person has at
        least one sample."""
        if strategy not in ("centroid", "best"):
            raise ValueError(f"unknown matching strategy {strategy!r}")
        index = cls.__new__(cls)
        owner = np.asarray(owner, dtype=np.int64)
        if strategy == "best" or len(owner) == 0:
            rows, groups = samples, owner
        elif len(owner) == len(hashes) and np.array_equal(owner, np.arange(len(owner))):
            rows, groups = samples, owner  # one sample each: its own mean
        else:
            rows = _means(owner, samples.astype(np.float32, copy=False), len(hashes))
            groups = np.arange(len(hashes), dtype=np.int64)
        index._build(list(hashes), list(names), groups, rows, policy, strategy)
        return index

    def _build(self, hashes: list[str], names: list[str], groups: NDArray[np.int64],
               rows: NDArray[np.float32], policy: OpenSetPolicy | None, strategy: str
               ) -> None:
        """Index ``rows``, row i for person ``hashes[groups[i]]``; every person has rows."""
        # Room to grow by an eighth before the rows are copied into larger arrays (a copy
        # of a million rows makes that one change take about half a second).
        store = _Rows(rows.shape[1] if rows.ndim == 2 else 0, len(rows) + len(rows) // 8)
        store.hashes, store.names = hashes, names
        store.append(rows, groups)
        counts = np.bincount(groups, minlength=len(hashes))
        base = _Base(dict(zip(hashes, range(len(hashes)))),
                     np.argsort(groups, kind="stable"),
                     np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        self._adopt(store, None, 0, base, {}, policy or OpenSetPolicy(threshold=1.0),
                    strategy, len(hashes))
        self._row_per_group = bool(np.array_equal(groups, np.arange(len(groups))))

    def _adopt(self, store: _Rows, dead: NDArray[np.bool_] | None, dead_count: int,
               base: _Base, overlay: dict[str, _Entry | None],
               policy: OpenSetPolicy, strategy: str, people: int) -> None:
        self._store = store
        self._n = store.n
        self._n_groups = len(store.hashes)
        self._vectors = store.vectors[:store.n]
        self._groups = store.groups[:store.n]
        self._dead = dead  # rows hidden in this snapshot (rows past its end are alive)
        self._dead_count = dead_count
        self._base = base  # never changed once made; changes since go in the overlay
        self._overlay = overlay
        self.policy = policy
        self.strategy = strategy
        self.people = people
        self._row_per_group = False  # row i is group i's only row (a fresh build may say so)
        # With "best" every (live) row is a sample.
        self.comparisons = store.n - dead_count if strategy == "best" else people

    # -- changes ---------------------------------------------------------------------------

    def _entry(self, person: str) -> _Entry | None:
        if person in self._overlay:
            return self._overlay[person]
        group = self._base.groups.get(person)
        if group is None:
            return None
        start, end = self._base.start[group:group + 2].tolist()
        return _Entry(group, tuple(self._base.order[start:end].tolist()))

    def replaced(self, person: str, name: str, samples: Sequence[Embedding]) -> GalleryIndex:
        """A snapshot in which ``person`` is called ``name`` and has exactly these
        samples (added if it was not indexed; removed if ``samples`` is empty)."""
        if not len(samples):
            return self.removed(person)
        embs = np.stack(samples).astype(np.float32)
        if self._store.dim and embs.shape[1] != self._store.dim:
            raise ValueError(f"embeddings have {embs.shape[1]} dimensions, the index "
                             f"{self._store.dim}")
        rows = embs if self.strategy == "best" else \
            np.mean(embs, axis=0, keepdims=True).astype(np.float32)
        index = self._changed(person, name, rows)
        index.negatives = self.negatives
        return index

    def removed(self, person: str) -> GalleryIndex:
        """A snapshot without ``person`` (the same one if it is not indexed)."""
        if self._entry(person) is None:
            return self
        index = self._changed(person, None, None)
        index.negatives = self.negatives
        return index

    def _changed(self, person: str, name: str | None, rows: NDArray[np.float32] | None
                 ) -> GalleryIndex:
        store = self._store
        if not store.dim and rows is not None and name is not None:  # the first person
            index = GalleryIndex.__new__(GalleryIndex)
            index._build([person], [name], np.zeros(len(rows), dtype=np.int64), rows,
                         self.policy, self.strategy)
            return index
        if store.n != self._n or self._crowded():
            # Not the newest snapshot of its rows (appending would show this branch's rows
            # to the other), or too many hidden rows or changes: start over compactly.
            return self._compacted()._changed(person, name, rows)
        old = self._entry(person)
        dead, dead_count = self._dead, self._dead_count
        if old is not None:
            dead = np.zeros(store.n, dtype=np.bool_) if dead is None else \
                np.concatenate([dead, np.zeros(store.n - len(dead), dtype=np.bool_)])
            dead[list(old.rows)] = True
            dead_count += len(old.rows)
        overlay = dict(self._overlay)
        if rows is None or name is None:
            overlay[person] = None
        else:
            same = old is not None and store.names[old.group] == name
            group = old.group if same and old is not None else store.add_group(person, name)
            first = store.n
            store.append(rows, np.full(len(rows), group, dtype=np.int64))
            overlay[person] = _Entry(group, tuple(range(first, store.n)))
        index = GalleryIndex.__new__(GalleryIndex)
        people = self.people + (old is None) - (rows is None)
        index._adopt(store, dead, dead_count, self._base, overlay, self.policy, self.strategy,
                     people)
        return index

    def _crowded(self) -> bool:
        return (self._dead_count > max(1024, self._n // 4)
                or len(self._overlay) > max(1024, self.people // 8))

    def _compacted(self) -> GalleryIndex:
        """The same snapshot with rows of its own and nothing hidden (in row order, so
        people keep their order)."""
        live = np.ones(self._n, dtype=np.bool_)
        if self._dead is not None:
            live[:len(self._dead)] = ~self._dead
        rows = np.flatnonzero(live)
        groups, renumbered = np.unique(self._groups[rows], return_inverse=True)
        hashes, names = self._store.hashes, self._store.names
        index = GalleryIndex.__new__(GalleryIndex)
        index._build([hashes[g] for g in groups.tolist()], [names[g] for g in groups.tolist()],
                     renumbered.astype(np.int64), self._vectors[rows], self.policy,
                     self.strategy)
        return index

    # -- queries ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.people

    @property
    def dim(self) -> int:
        """Dimensions of the indexed embeddings (0 while nothing was ever indexed)."""
        return self._store.dim

    def ranked(self, embedding: Embedding, top: int | None = None) -> list[Match]:
        """People with their scores (a person's best row), best first; all of them,
        or the ``top`` few."""
        if not self.people or self._store.dim != embedding.shape[0]:
            return []
        q = np.ascontiguousarray(embedding, dtype=np.float32)
        screen = self._store.screen
        if top is not None and screen is not None and screen.usable and self._n >= SCREEN_ROWS:
            screened = self._screened(q, min(top, self.people))
            if screened is not None:
                return screened
        sims = self._vectors @ q
        if self._dead is not None:
            sims[:len(self._dead)][self._dead] = -np.inf
        scores = self._group_scores(self._groups, sims)
        live = np.count_nonzero(scores > -np.inf)
        if top is not None and top < live:
            picked = np.argpartition(-scores, top - 1)[:top]
            order = picked[np.argsort(-scores[picked], kind="stable")]
        else:
            order = np.argsort(-scores, kind="stable")[:live]
        return self._matches(order, scores[order])

    def _group_scores(self, groups: NDArray[np.int64], sims: NDArray[np.float32]
                      ) -> NDArray[np.float32]:
        """Each group's best row; -inf for groups without a (live) row."""
        if self._row_per_group:
            return sims
        scores = np.full(self._n_groups, -np.inf, dtype=np.float32)
        np.maximum.at(scores, groups, sims)
        return scores

    def _matches(self, groups: NDArray[np.int64], scores: NDArray[np.float32]) -> list[Match]:
        hashes, names = self._store.hashes, self._store.names
        return [Match(hashes[g], names[g], float(s))
                for g, s in zip(groups.tolist(), scores.tolist())]

    def _screened(self, q: Embedding, top: int) -> list[Match] | None:
        """The exact top ``top`` through the screen, or None if that would take more than
        a few rounds (the caller then scores every row).

        The screen returns the k rows it scores highest; every other row's screened
        similarity is at most the k-th one, ``floor``, so its exact similarity is at most
        ``floor + error``. Once the ``top`` best people among the candidates, rescored
        exactly, all score above that, no other row can change the answer."""
        screen = self._store.screen
        assert screen is not None
        # int8 similarities are a few hundredths off: more rows lie within that of the top.
        k = max(256 if screen.kind == "int8" else 16, 8 * top)
        while k <= self._n // 8:
            approx, ids, error = screen.search(q, k)
            ids = ids[ids >= 0]
            exhaustive = len(ids) < k
            floor = float(approx[len(ids) - 1]) if len(ids) else -np.inf
            ids = ids[ids < self._n]
            if self._dead is not None:
                inside = ids < len(self._dead)
                ids = ids[~(inside & self._dead[np.minimum(ids, len(self._dead) - 1)])]
            sims = self._vectors[ids] @ q
            groups = self._groups[ids]
            best: dict[int, float] = {}
            for g, s in zip(groups.tolist(), sims.tolist()):
                if s > best.get(g, -np.inf):
                    best[g] = s
            ranked = sorted(best.items(), key=lambda gs: (-gs[1], gs[0]))[:top]
            if len(ranked) == top and (exhaustive or ranked[-1][1] > floor + error):
                return self._matches(np.array([g for g, _ in ranked], dtype=np.int64),
                                     np.array([s for _, s in ranked], dtype=np.float32))
            k *= 4
        return None

    def best(self, embedding: Embedding) -> Match | None:
        """The most similar person whatever the similarity, or None for an empty gallery."""
        ranked = self.ranked(embedding, top=1)
        return ranked[0] if ranked else None

    def with_negatives(self, negatives: Negatives) -> GalleryIndex:
        """This snapshot with ``negatives`` instead of its own (the rows are shared)."""
        index = copy.copy(self)
        index.negatives = negatives
        return index

    def identify(self, embedding: Embedding) -> Match | None:
        """The enrolled person this face is, or None for a stranger (see OpenSetPolicy).
        A person whose negatives claim the face (Negatives.vetoes) is passed over: the next
        one must be named on its own merits."""
        vetoing = self.negatives.rows
        ranked = self.ranked(embedding, top=2 + 2 * bool(vetoing))
        if vetoing:
            ranked = [m for m in ranked
                      if not self.negatives.vetoes(m.hash, embedding, m.similarity)]
        if not ranked:
            return None
        first = ranked[0]
        if first.similarity < self.policy.identify_threshold(self.comparisons):
            return None
        if len(ranked) > 1 and first.similarity - ranked[1].similarity < self.policy.margin:
            return None
        return first

    def score(self, embedding: Embedding, person: str) -> float | None:
        """The score of ``person`` for this face (None if they are not indexed)."""
        entry = self._entry(person)
        if entry is None or self._store.dim != embedding.shape[0]:
            return None
        return float(np.max(self._vectors[list(entry.rows)] @ embedding))

    def near_certain(self, embedding: Embedding, far: float) -> Match | None:
        """The person this face is with a chance of at most ``far`` that it is somebody
        else: the test for "already enrolled", which must not refuse new people."""
        first = self.best(embedding)
        threshold = self.policy.identify_threshold(self.comparisons, far)
        return first if first is not None and first.similarity >= threshold else None
