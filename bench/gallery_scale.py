#!/usr/bin/env python3
"""Matching one face against 10,000 to 1,000,000 enrolled identities: which index, how fast.

Issue 11's target: a 1,000,000-identity gallery, matching a face in <= 10 ms p99. Candidates,
each asked for the top 2 identities of one face at a time, as the live pipeline asks
(``GalleryIndex.identify``):

* ``numpy-f32``: today's matcher before this bench, ``matrix @ face`` then argpartition.
* ``numpy-f16``: the same product on a float16 matrix (half the memory).
* ``faiss-flat``: faiss ``IndexFlatIP``, exact, float32.
* ``faiss-f16``: faiss ``IndexScalarQuantizer`` fp16, a scan of float16 rows (approximate
  scores; its recall is stated).
* ``GalleryIndex-int8`` / ``-float16``: facestream's index: a faiss scan of an int8 (or
  float16) copy screens, the float32 rows of its candidates are rescored, with a bound on the
  screen's error proving the answer exact (``answered_by_screen``: the share of faces the
  screen could prove; the others scan every row in float32).
* ``faiss-hnsw``: faiss ``IndexHNSWFlat`` (M 32, efConstruction 40), an ANN, at efSearch 64
  and 128, with its recall@2 against exact.

The gallery's identities are synthetic: 128-d vectors drawn from a normal distribution fitted
to real SFace embeddings of the shared LFW images (so they spread as faces do), L2-normalised,
with the 123 real first photos of the LFW people who have two or more photos among them. The
faces asked are real: those people's other photos and the 219 one-photo strangers. Latency is
measured per face (p50, p99) with 1 and 2 threads (each in a process of its own, OMP and BLAS
limited), memory as the growth of the process's RSS while the index is built (and bytes per
identity), then the time to add one identity and to remove one. ``GalleryIndex`` must give
the same answers as numpy-f32 on every face, or the bench fails.

Start-up: a real ``gallery.sqlite3`` with N identities, made by ``Gallery.open`` with its rows
then written in bulk, opened again by ``Gallery.open`` in a fresh process until its index is
ready to match (time and RSS).

    python bench/gallery_scale.py [--sizes 10000 100000 1000000] [--startup 1000000]
    python bench/gallery_scale.py --sizes --out bench/results/gallery_startup.json
    python bench/gallery_scale.py --sizes --postgresql   # the start-up in PostgreSQL too

Writes bench/results/gallery_scale.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "faces" / "lfw"
RESULTS = REPO / "bench" / "results"
EMBEDDINGS = RESULTS / "gallery_scale_lfw_sface.npz"
DIM = 128
#: The GalleryIndex before this bench (a full rebuild from Python lists on every change).
BEFORE = "06877e8"


def rss() -> int:
    """This process's resident set, bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def lfw_embeddings() -> dict[str, list[np.ndarray]]:
    """SFace embeddings of every LFW image's largest face, per person (cached)."""
    if EMBEDDINGS.exists():
        data = np.load(EMBEDDINGS)
        people: dict[str, list[np.ndarray]] = {}
        for name, emb in zip(data["names"].tolist(), data["embs"]):
            people.setdefault(name, []).append(emb)
        return people
    with tempfile.TemporaryDirectory(prefix="facestream-bench-") as home:
        os.environ["DEEPFACE_HOME"] = home
        from facestream import weights
        from facestream.images import decode_image
        from facestream.recognition import Recognizer, configure_environment

        configure_environment()
        weights.provision()
        rec = Recognizer("SFace", detector="yunet", threads=1)
        names, embs = [], []
        for person in sorted(d for d in LFW.iterdir() if d.is_dir()):
            for path in sorted(person.glob("*.jpg")):
                faces = rec.analyze_image(decode_image(path.read_bytes(), 10**8))
                if faces and faces[0].embedding is not None:
                    names.append(person.name)
                    embs.append(faces[0].embedding)
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.savez(EMBEDDINGS, names=np.array(names), embs=np.stack(embs))
    return lfw_embeddings()


def dataset(n: int, seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(gallery rows, their names, probe faces, each probe's true row or -1 for a stranger)."""
    people = lfw_embeddings()
    real = np.stack([e for embs in people.values() for e in embs]).astype(np.float64)
    mean, cov = real.mean(axis=0), np.cov(real, rowvar=False)
    rng = np.random.default_rng(seed)
    several = [p for p, e in people.items() if len(e) >= 2]
    enrolled = np.stack([people[p][0] for p in several])
    gallery = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        block = rng.multivariate_normal(mean, cov, size=min(100_000, n - start))
        gallery[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    at = rng.choice(n, size=len(several), replace=False)
    gallery[at] = enrolled
    names = [f"synthetic {i}" for i in range(n)]
    for row, person in zip(at.tolist(), several):
        names[row] = person
    probes = [(e, row) for row, p in zip(at.tolist(), several) for e in people[p][1:]]
    probes += [(e[0], -1) for p, e in people.items() if len(e) == 1]
    return (gallery, names, np.stack([e for e, _ in probes]).astype(np.float32),
            np.array([r for _, r in probes]))


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """p50 and p99 of ``fn``'s wall time, ms."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def top2_numpy(matrix: np.ndarray, q: np.ndarray) -> np.ndarray:
    sims = matrix @ q.astype(matrix.dtype)
    picked = np.argpartition(-sims, 1)[:2]
    return picked[np.argsort(-sims[picked], kind="stable")]


def measure(n: int, threads: int, hnsw: bool) -> dict[str, Any]:
    """Every candidate at gallery size ``n`` in this process (threads set by the caller)."""
    import faiss  # type: ignore[import-untyped]

    from facestream.matching import GalleryIndex, OpenSetPolicy

    faiss.omp_set_num_threads(threads)
    from facestream import matching

    matching_screen = matching._screen

    def screen_with_threads(vectors: np.ndarray) -> Any:  # GalleryIndex sets one thread
        made = matching_screen(vectors)
        faiss.omp_set_num_threads(threads)
        return made

    matching._screen = screen_with_threads
    gallery, names, probes, truth = dataset(n)
    queries = len(probes) if n <= 100_000 else 200
    exact = np.stack([top2_numpy(gallery, q) for q in probes])
    out: dict[str, Any] = {}

    def record(name: str, build: Callable[[], Any], query: Callable[[Any, np.ndarray], Any],
               top2: Callable[[Any, np.ndarray], np.ndarray] | None,
               add: Callable[[Any], Any] | None = None,
               remove: Callable[[Any], Any] | None = None, repeat: int = queries) -> Any:
        gc.collect()
        before = rss()
        t0 = time.perf_counter()
        index = first = build()
        built = time.perf_counter() - t0
        grown = rss() - before
        p = iter(range(10**9))
        p50, p99 = timed(lambda: query(index, probes[next(p) % len(probes)]), repeat)
        row: dict[str, Any] = {"p50_ms": p50, "p99_ms": p99, "build_s": built,
                               "rss_mb": grown / 2**20, "bytes_per_identity": grown / n}
        if top2 is not None:
            got = [set(top2(index, q).tolist()) for q in probes]
            row["recall_at_2"] = float(np.mean([len(g & set(e.tolist())) / 2
                                                for g, e in zip(got, exact)]))
            row["top1_right"] = float(np.mean([e[0] in g for g, e in zip(got, exact)]))
        if add is not None:
            t0 = time.perf_counter()
            index = add(index)
            row["add_one_ms"] = (time.perf_counter() - t0) * 1e3
        if remove is not None:
            t0 = time.perf_counter()
            index = remove(index)
            row["remove_one_ms"] = (time.perf_counter() - t0) * 1e3
        out[name] = row
        print(f"  n={n} threads={threads} {name}: {row}", file=sys.stderr)
        return first  # (an index faiss changed in place, or GalleryIndex's first snapshot)

    extra = gallery[0] * 0.5 + probes[0] * 0.5
    extra /= np.linalg.norm(extra)
    record("numpy-f32", lambda: gallery.copy(), top2_numpy, top2_numpy,
           repeat=min(queries, 100 if n >= 1_000_000 else queries))
    record("numpy-f16", lambda: gallery.astype(np.float16), top2_numpy, None,
           repeat=min(queries, 10 if n >= 1_000_000 else 50))

    def faiss_top2(index: Any, q: np.ndarray) -> np.ndarray:
        return index.search(q[None, :], 2)[1][0]

    def flat() -> Any:
        index = faiss.IndexFlatIP(DIM)
        index.add(gallery)
        return index

    def flat_remove(index: Any) -> Any:
        index.remove_ids(np.array([n // 2], dtype=np.int64))
        return index

    record("faiss-flat", flat, faiss_top2, faiss_top2,
           lambda i: (i.add(extra[None, :]), i)[1], flat_remove)

    def f16() -> Any:
        index = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_fp16,
                                           faiss.METRIC_INNER_PRODUCT)
        index.add(gallery)
        return index

    record("faiss-f16", f16, faiss_top2, faiss_top2)

    policy = OpenSetPolicy(threshold=0.3)
    faces = [f"{i:064x}" for i in range(n)]

    def ours_top2(index: GalleryIndex, q: np.ndarray) -> np.ndarray:
        return np.array([int(m.hash, 16) for m in index.ranked(q, top=2)])

    def ours_add(index: GalleryIndex) -> GalleryIndex:
        return index.replaced("new", "Newcomer", [extra])

    def ours_remove(index: GalleryIndex) -> GalleryIndex:
        return index.removed(faces[n // 2])

    latest: dict[str, GalleryIndex] = {}

    def ours_remove_kept(index: GalleryIndex) -> GalleryIndex:
        latest["index"] = ours_remove(index)
        return latest["index"]

    for kind in ("int8", "float16"):
        matching.SCREEN_KIND = kind
        name = f"GalleryIndex-{kind}"
        ours = record(name, lambda: GalleryIndex.from_arrays(
            faces, names, np.arange(n), gallery, "centroid", policy),
            lambda i, q: i.identify(q), ours_top2, ours_add, ours_remove_kept)
        # The snapshot taken before the add and remove, which must not have seen them.
        wrong = [k for k, q in enumerate(probes)
                 if ours_top2(ours, q).tolist() != exact[k].tolist()]
        if wrong:
            raise SystemExit(f"{name} differs from the exact top 2 on probes {wrong}")
        screen = ours._store.screen
        out[name]["answered_by_screen"] = float(np.mean(
            [screen is not None and ours._screened(q, 2) is not None for q in probes]))
        t0 = time.perf_counter()  # a rename: another name for the same rows
        latest["index"].replaced(faces[1], "Renamed", [gallery[1]])
        out[name]["rename_one_ms"] = (time.perf_counter() - t0) * 1e3
        del ours, screen
        latest.clear()

    if threads == 1:  # today's index, rebuilt from Python lists as Gallery did on each change
        before = _before_module()
        lists = [(faces[i], names[i], [gallery[i]]) for i in range(n)]
        t0 = time.perf_counter()
        before.GalleryIndex.from_samples(lists, "centroid", before.OpenSetPolicy(0.3))
        out["numpy-f32"]["add_one_ms"] = out["numpy-f32"]["remove_one_ms"] = (
            time.perf_counter() - t0) * 1e3
        del lists

    if hnsw:
        def hnsw_build() -> Any:
            index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
            index.add(gallery)
            return index

        built = record("faiss-hnsw-ef64", hnsw_build,
                       lambda i, q: (setattr(i.hnsw, "efSearch", 64), faiss_top2(i, q)),
                       lambda i, q: faiss_top2(i, q),
                       lambda i: (i.add(extra[None, :]), i)[1])
        for ef in (128,):
            built.hnsw.efSearch = ef
            p50, p99 = timed(lambda: faiss_top2(built, probes[0]), queries)
            got = [set(faiss_top2(built, q).tolist()) for q in probes]
            out[f"faiss-hnsw-ef{ef}"] = {
                "p50_ms": p50, "p99_ms": p99,
                "recall_at_2": float(np.mean([len(g & set(e.tolist())) / 2
                                              for g, e in zip(got, exact)])),
                "top1_right": float(np.mean([e[0] in g for g, e in zip(got, exact)])),
                "note": "same graph as ef64"}
        out["faiss-hnsw-ef64"]["remove_one_ms"] = None  # IndexHNSWFlat cannot remove
    out["probes"] = {"enrolled": int((truth >= 0).sum()), "strangers": int((truth < 0).sum())}
    return out


def _before_module() -> Any:
    """facestream/matching.py as it was at ``BEFORE``, imported from a temporary file."""
    import importlib.util

    source = subprocess.run(["git", "show", f"{BEFORE}:facestream/matching.py"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "identity_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("identity_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["identity_before"] = module
    spec.loader.exec_module(module)
    return module


def make_gallery(data_dir: Path, n: int) -> None:
    """A real gallery.sqlite3 of ``n`` one-sample identities: created by the storage code,
    its rows then written in bulk (the API would take hours)."""
    from facestream.config import Config
    from facestream.db.disk import DB_FILE
    from facestream.matching import face_hash
    from facestream.storage import Gallery

    async def create() -> None:
        g = await Gallery.open(data_dir, "SFace", Config().recognition.policy("SFace"),
                               b"k" * 32)
        await g.close()

    asyncio.run(create())
    gallery, _, _, _ = dataset(n)
    now = time.time()
    with sqlite3.connect(data_dir / DB_FILE) as db:
        db.execute("PRAGMA synchronous=OFF")
        for start in range(0, n, 100_000):
            block = gallery[start:start + 100_000]
            hashes = [face_hash(e) for e in block]
            db.executemany(
                "INSERT INTO people (hash, name, email_hmac, created_at, updated_at) "
                "VALUES (?, ?, NULL, ?, ?)",
                [(h, f"person {start + i}", now + start + i, now)
                 for i, h in enumerate(hashes)])
            db.executemany(
                "INSERT INTO samples (person, model, dim, embedding, source, created_at) "
                "VALUES (?, 'SFace', ?, ?, 'import', ?)",
                [(h, DIM, e.astype("<f4").tobytes(), now) for h, e in zip(hashes, block)])


def startup(where: str) -> dict[str, Any]:
    """Open the gallery (a data dir, or a PostgreSQL URL) in this (fresh) process until its
    index is ready to match."""
    from facestream.config import Config
    from facestream.storage import Gallery

    async def run() -> dict[str, Any]:
        before = rss()
        t0 = time.perf_counter()
        policy = Config().recognition.policy("SFace")
        g = await (Gallery.open_url(where, "SFace", policy, b"k" * 32)
                   if where.startswith("postgresql://")
                   else Gallery.open(Path(where), "SFace", policy, b"k" * 32))
        ready = time.perf_counter() - t0
        grown = rss() - before
        probe = next(iter(g._embeddings.values()))
        t1 = time.perf_counter()
        match = g.index.identify(probe)
        first = time.perf_counter() - t1
        n = len(g.index)
        await g.close()
        return {"identities": n, "startup_s": ready, "rss_mb": grown / 2**20,
                "bytes_per_identity": grown / max(n, 1), "first_match_ms": first * 1e3,
                "first_match_found": match is not None}

    return asyncio.run(run())


def startup_postgresql(data_dir: Path) -> dict[str, Any]:
    """The start-up gallery moved into PostgreSQL by ``gallery migrate``'s code, then opened
    by a node in a fresh process."""
    from facestream.config import Config
    from facestream.db.disk import DB_FILE
    from facestream.pgmigrate import migrate

    sys.path.insert(0, str(REPO))
    from tests.pg import pg_cluster  # the tests' throwaway cluster

    with pg_cluster() as cluster:
        url = cluster.create_database("scale")
        (data_dir / "secret.key").write_text((b"k" * 32).hex())
        t0 = time.perf_counter()
        asyncio.run(migrate(data_dir / DB_FILE, url, "SFace", Config()))
        moved = time.perf_counter() - t0
        result = run_child(["--startup-dir", url], 2)
    result["migrated_in_s"] = moved
    return result


def child(args: argparse.Namespace) -> int:
    if args.startup_dir:
        print(json.dumps(startup(args.startup_dir)))
        return 0
    result = {str(n): measure(n, args.threads, args.hnsw) for n in args.sizes}
    print(json.dumps(result))
    return 0


def run_child(extra: list[str], threads: int) -> Any:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, __file__, "--child", *extra], env=env,
                          capture_output=True, text=True, check=False)
    sys.stderr.write(proc.stderr)
    if proc.returncode:
        raise SystemExit(f"child {extra} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000],
                   help="gallery sizes to match against (none: only the start-up)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--startup", type=int, default=1_000_000,
                   help="identities in the start-up gallery (0: skip)")
    p.add_argument("--no-hnsw", dest="hnsw", action="store_false")
    p.add_argument("--postgresql", action="store_true",
                   help="also move the start-up gallery into a throwaway PostgreSQL cluster "
                        "(gallery migrate) and time a node opening it")
    p.add_argument("--out", type=Path, default=RESULTS / "gallery_scale.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--startup-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
        return child(args)
    lfw_embeddings()  # once, before the children read the cache
    results: dict[str, Any] = {"cpus": os.cpu_count(), "threads": {}}
    sizes = [str(n) for n in args.sizes]
    for threads in args.threads if sizes else []:
        # HNSW is built once, in the last child (its build uses the threads; a single
        # query's search is one thread whatever the setting).
        hnsw = args.hnsw and threads == args.threads[-1]
        extra = ["--sizes", *sizes] + ([] if hnsw else ["--no-hnsw"])
        results["threads"][str(threads)] = run_child(extra, threads)
    if args.startup:
        with tempfile.TemporaryDirectory(prefix="facestream-scale-") as data:
            t0 = time.perf_counter()
            make_gallery(Path(data), args.startup)
            made = time.perf_counter() - t0
            results["startup"] = run_child(["--startup-dir", data], 2)
            results["startup"]["made_in_s"] = made
            results["startup"]["file_mb"] = sum(
                f.stat().st_size for f in Path(data).iterdir()) / 2**20
            if args.postgresql:
                results["startup_postgresql"] = startup_postgresql(Path(data))
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(table(results))
    return 0


def table(results: dict[str, Any]) -> str:
    lines = [("| N | index | threads | p50 ms | p99 ms | recall@2 | build s | MB (B/identity) "
              "| add 1 ms | remove 1 ms |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for threads, by_size in results["threads"].items():
        for n, rows in by_size.items():
            for name, r in rows.items():
                if name == "probes":
                    continue

                def f(key: str, fmt: str = "{:.2f}", r: dict[str, Any] = r) -> str:
                    v = r.get(key)
                    return "-" if v is None else fmt.format(v)

                mem = (f"{r['rss_mb']:.0f} ({r['bytes_per_identity']:.0f})"
                       if "rss_mb" in r else "-")
                lines.append(f"| {int(n):,} | {name} | {threads} | {f('p50_ms')} | "
                             f"{f('p99_ms')} | {f('recall_at_2', '{:.4f}')} | "
                             f"{f('build_s')} | {mem} | {f('add_one_ms')} | "
                             f"{f('remove_one_ms')} |")
    def ready(s: dict[str, Any]) -> str:
        return (f"ready to match in {s['startup_s']:.1f} s, RSS +{s['rss_mb']:.0f} MB "
                f"({s['bytes_per_identity']:.0f} B/identity)")

    if "startup" in results:
        s = results["startup"]
        lines.append(f"\nstart-up: {s['identities']:,} identities from a "
                     f"{s['file_mb']:.0f} MB gallery.sqlite3 {ready(s)}")
    if "startup_postgresql" in results:
        s = results["startup_postgresql"]
        lines.append(f"the same in PostgreSQL (moved by gallery migrate in "
                     f"{s['migrated_in_s']:.0f} s): a node {ready(s)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
