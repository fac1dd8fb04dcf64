#!/usr/bin/env python3
"""Faces at a distance and at night: ``live_benchmark.py`` over a matrix, as one table.

Cells: face width 24, 32, 48, 80 px (``--face-px``) x colour / IR (``--mono``: grey,
contrast-equalised frames; people are still enrolled in colour) x 1080p / 4K canvas
(``--canvas 1920x1080`` / ``3840x2160``), each with ``--viewers`` MJPEG viewers. Every cell
is a fresh ``live_benchmark.py`` process (one server per run, stopped at its end); its full
results and server logs go to ``bench/results/distance-<label>/``, and the medians of all
cells to ``bench/results/distance-<label>.json``, rewritten after each cell, so an
interrupted table keeps what it measured. ``--pythonpath DIR`` measures the code in DIR (a
git worktree of an older commit) for comparison; ``--only`` picks cells, e.g.
``--only 1080p`` or ``--only 48,colour`` (values of one kind: any of them; of different
kinds: all); ``--table FILE`` prints the table of a results file again, measuring nothing.

The table: the faces' actual width in the frames sent (median over A, B and C, with the
per-person medians' range), the share of right reads of A and B once first named
(``steady_identity``) and of all their reads after a segment's first 0.3 s
(``right_identity``, which counts the wait for the first name too), the median delay to the first right name, the share of stranger C's
reads that named somebody, the server's CPU use in cores over the program (server and worker
processes), the slowest viewer's fps, and the server's full-resolution sweep time
(``facestream_sweep_seconds``, median over the program; "-" when the server has none).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

REPO = Path(__file__).resolve().parents[1]
LIVE: Final = Path(__file__).resolve().with_name("live_benchmark.py")
FACE_PX: Final = (24, 32, 48, 80)
LOOKS: Final = {"colour": False, "IR": True}
CANVASES: Final = {"1080p": "1920x1080", "4K": "3840x2160"}
#: --only words for each kind of value, lower case
ALIASES: Final = {"colour": "colour", "color": "colour", "ir": "IR", "mono": "IR",
                  "1080p": "1080p", "1080": "1080p", "4k": "4K", "2160p": "4K", "2160": "4K"}


@dataclass(frozen=True)
class Cell:
    face_px: int
    look: str  # key of LOOKS
    canvas: str  # key of CANVASES

    @property
    def name(self) -> str:
        return f"{self.face_px}px-{self.look.lower()}-{self.canvas.lower()}"

    def argv(self) -> list[str]:
        return ["--face-px", str(self.face_px), "--canvas", CANVASES[self.canvas],
                *(["--mono"] if LOOKS[self.look] else [])]


def cells(only: str | None) -> list[Cell]:
    """The matrix, or the part of it ``only`` picks."""
    px, looks, canvases = set(FACE_PX), set(LOOKS), set(CANVASES)
    if only:
        want: dict[str, set[Any]] = {"px": set(), "look": set(), "canvas": set()}
        for word in filter(None, (w.strip() for w in only.split(","))):
            if word.isdigit():
                want["px"].add(int(word))
            elif (value := ALIASES.get(word.lower())) in LOOKS:
                want["look"].add(value)
            elif value in CANVASES:
                want["canvas"].add(value)
            else:
                raise SystemExit(f"--only: {word!r} is none of {', '.join(map(str, FACE_PX))}, "
                                 "colour, IR (mono), 1080p, 4K")
        px, looks, canvases = (want[k] or full for k, full in (
            ("px", px), ("look", looks), ("canvas", canvases)))
    return [Cell(p, lk, c) for c in CANVASES if c in canvases for lk in LOOKS if lk in looks
            for p in sorted(px)]


def default_label(code: Path) -> str:
    """The measured tree's short commit, with ``-dirty`` when its facestream/ has changes."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(code), *cmd], check=False, capture_output=True,
                              text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or code.name
    return commit + ("-dirty" if git("status", "--porcelain", "facestream") else "")


def run_cell(cell: Cell, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One live_benchmark.py process; its results file's contents. Interrupted (Ctrl-C,
    SIGTERM), it is asked to stop its server first."""
    cmd = [sys.executable, str(LIVE), *cell.argv(), "--viewers", str(args.viewers),
           "--runs", str(args.runs), "--duration", str(args.duration), "--out", str(out),
           *(["--pythonpath", str(args.pythonpath)] if args.pythonpath else [])]
    print(f"\n== {cell.name}: {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.Popen(cmd)
    try:
        if proc.wait() != 0:
            raise RuntimeError(f"live_benchmark.py exited with {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # live_benchmark stops its server on SIGTERM
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return json.loads(out.read_text())


def row(cell: dict[str, Any]) -> list[str]:
    """A table row from a cell of the results file."""
    def num(v: float | None, fmt: str, scale: float = 1.0) -> str:
        return "-" if v is None or math.isnan(v) else format(v * scale, fmt)

    faces = cell.get("faces") or {}
    medians = sorted(f["px"]["median"] for f in faces.values() if f["px"]["median"])
    found = [f["found_full_res"] for f in faces.values()]
    px = "-"
    if medians:
        px = f"{medians[len(medians) // 2]:.0f} ({medians[0]:.0f}-{medians[-1]:.0f})"
        if found and min(found) < 1:
            px += f", YuNet {min(found):.0%}"
    m = cell.get("median")
    if m is None:
        error = cell.get("error", "?").splitlines()[0].replace("|", "/")
        return [px, cell["look"], cell["canvas"], f"failed: {error}"[:60], *["-"] * 5]
    first = m.get("name_s_median")
    right = (f"{num(m.get('steady_identity_A'), '.0f', 100)} / "
             f"{num(m.get('steady_identity_B'), '.0f', 100)} "
             f"({num(m.get('right_identity_A'), '.0f', 100)} / "
             f"{num(m.get('right_identity_B'), '.0f', 100)})")
    return [px, cell["look"], cell["canvas"], right,
            "never" if first is None else num(first, ".2f"),
            num(m.get("stranger_named_share"), ".1f", 100),
            num(m.get("server_cpu_cores"), ".2f"), num(m.get("viewer_fps_min"), ".1f"),
            num(m.get("sweep_s_median"), ".2f")]


HEADER: Final = ["face px (actual median)", "colour/IR", "canvas",
                 "identity right A / B: steady % (% of all reads)", "first right name (s)",
                 "stranger C named (% of reads)", "server CPU cores", "viewer fps (min)",
                 "sweep s"]


def table(results: dict[str, Any]) -> str:
    rows = [HEADER, ["---"] * len(HEADER), *(row(c) for c in results["cells"])]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--runs", type=int, default=1, help="runs per cell (medians reported)")
    p.add_argument("--duration", type=float, default=60.0, help="program length per run, s")
    p.add_argument("--viewers", type=int, default=10)
    p.add_argument("--pythonpath", type=Path, metavar="DIR",
                   help="measure the facestream package in DIR (a git worktree) instead")
    p.add_argument("--only", help="cells to run, e.g. 1080p or 48,colour or 24,32,IR,4K")
    p.add_argument("--label", help="names the results: bench/results/distance-LABEL.json "
                   "(default: the measured tree's short commit, -dirty if changed)")
    p.add_argument("--table", type=Path, metavar="FILE",
                   help="print the table of this results file and exit")
    args = p.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    if args.pythonpath is not None:
        args.pythonpath = args.pythonpath.resolve()
    todo = cells(args.only)
    label = args.label or default_label(args.pythonpath or REPO)
    out = REPO / "bench" / "results" / f"distance-{label}.json"
    cell_dir = out.with_suffix("")
    cell_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "label": label, "code": str(args.pythonpath or REPO), "runs": args.runs,
        "duration": args.duration, "viewers": args.viewers, "cells": []}

    def interrupted(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    with contextlib.suppress(KeyboardInterrupt):
        for cell in todo:
            entry: dict[str, Any] = {"cell": cell.name, "face_px": cell.face_px,
                                     "look": cell.look, "canvas": cell.canvas}
            try:
                done = run_cell(cell, args, cell_dir / f"{cell.name}.json")
                entry |= {"faces": done["config"]["faces"], "median": done["median"],
                          "commit": done["config"]["commit"],
                          "uncommitted": done["config"]["uncommitted"],
                          "results": str(cell_dir / f"{cell.name}.json")}
            except (RuntimeError, OSError, ValueError, KeyError) as exc:
                entry["error"] = str(exc)
                print(f"{cell.name}: {exc}", file=sys.stderr)
            results["cells"].append(entry)
            out.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {out}\n")
        print(table(results))
        return 0
    print(f"interrupted; {len(results['cells'])} cells in {out}", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
