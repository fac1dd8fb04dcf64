"""The command line as a new user meets it: shared options before or after a command and its
action, a mistyped data dir refused rather than created, a new gallery said aloud, one helpful
line for a camera that cannot be opened, "opened" once for a looping file, and `python -m
facestream` run beside a checkout folder named facestream (an editable install into a throwaway
venv).

Parsing and the commands run in this process, through ``cli.main`` as ``python -m facestream``
calls it (see :func:`cli`). Only what needs a process is one: a running server (its log, its
signals, its exit code) and an interpreter started beside a checkout folder."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from facestream import __version__
from facestream.cli import main
from facestream.db.disk import DB_FILE

from .conftest import ROOT, TALKING_HEAD, free_port, read_video, write_video
from .servers import Server

PASSWORD = "correct horse battery staple\n"
#: Every shared option a command can take, as its --help lists them.
SHARED = {"--config", "--data-dir", "--model", "--workers"}


@dataclass
class Ran:
    """What a command did, as a process's caller sees it."""

    returncode: int
    stdout: str
    stderr: str


Run = Callable[..., Ran]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """``run(*args, cwd=..., stdin=...)``: ``python -m facestream ARGS`` in this process, as a
    new process would run it: in ``cwd``, with ``stdin``, ``sys.argv`` as ``-m`` sets it (the
    usage lines name ``python -m facestream``), argparse's 80 columns, and logging as
    ``main`` configures it writing to the captured stderr (pytest's own handlers set aside,
    then everything restored)."""

    def run_(*args: str, cwd: Path, stdin: str | None = None) -> Ran:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        monkeypatch.setattr(sys, "argv", [str(ROOT / "facestream" / "__main__.py"), *args])
        monkeypatch.setenv("COLUMNS", "80")
        capsys.readouterr()
        with fresh_logging():
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse: usage errors (2), --help and --version (0)
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run_


@contextlib.contextmanager
def fresh_logging() -> Iterator[None]:
    """The root logger as a new process has it (no handlers, level WARNING) while ``main``
    runs, so its ``logging.basicConfig`` takes effect as it would there; restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def tree(path: Path) -> list[str]:
    """Everything under ``path``, to show that a refused command created nothing."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def missing(data: str, cwd: Path) -> str:
    return (f"error: the data dir {data} ({cwd / data}) does not exist: check --data-dir (or "
            "storage.data_dir in the config file), or create a gallery there: start the "
            "server once, or enroll someone (faces add NAME PHOTO)\n")


def created(data: Path) -> str:
    return (f"created a new gallery at {data / DB_FILE} (to use an existing one, check "
            "--data-dir or storage.data_dir)")


@pytest.fixture
def gallery(run: Run, tmp_path: Path) -> Path:
    """A data dir whose gallery has one dashboard user, ada, made by the command line."""
    data = tmp_path / "data"
    proc = run("users", "add", "ada", "--role", "admin", "--password-stdin", "--data-dir",
               str(data), cwd=tmp_path, stdin=PASSWORD)
    assert proc.returncode == 0, proc.stderr
    return data


# -- shared options anywhere ------------------------------------------------------------------


def test_shared_options_work_before_and_after_the_command_and_its_action(
        run: Run, gallery: Path, tmp_path: Path) -> None:
    d = str(gallery)
    for args in (("--data-dir", d, "users", "list"), ("users", "--data-dir", d, "list"),
                 ("users", "list", "--data-dir", d)):
        proc = run(*args, cwd=tmp_path)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "ada  admin\n", ""), args
    # --model is taken in every place too: the empty gallery reports the model asked for.
    for args in (("--data-dir", d, "--model", "Dlib", "faces", "list"),
                 ("faces", "--data-dir", d, "--model", "Dlib", "list"),
                 ("faces", "list", "--data-dir", d, "--model", "Dlib"),
                 ("faces", "--model", "Dlib", "list", "--data-dir", d),
                 ("--model=Dlib", "faces", "list", f"--data-dir={d}")):
        proc = run(*args, cwd=tmp_path)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "0 people (Dlib)\n", ""), \
            args
    config = tmp_path / "mine.toml"
    config.write_text(f'[storage]\ndata_dir = "{d}"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args in (("--config", str(config), "gallery", "check"),
                 ("gallery", "--config", str(config), "check"),
                 ("gallery", "check", "--config", str(config))):
        proc = run(*args, cwd=elsewhere)
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            0, "ok: 0 people, 0 samples, 0 visits\n", ""), args


def test_an_option_given_twice_the_later_one_wins(run: Run, gallery: Path,
                                                   tmp_path: Path) -> None:
    d = str(gallery)
    for args in (("users", "--data-dir", "typo", "list", "--data-dir", d),
                 ("--data-dir", "typo", "users", "list", "--data-dir", d),
                 ("--data-dir", "typo", "users", "--data-dir", d, "list")):
        proc = run(*args, cwd=tmp_path)
        assert (proc.returncode, proc.stdout) == (0, "ada  admin\n"), args
    for args in (("users", "--data-dir", d, "list", "--data-dir", "typo"),
                 ("--data-dir", d, "users", "list", "--data-dir", "typo"),
                 ("--data-dir", d, "users", "--data-dir", "typo", "list")):
        proc = run(*args, cwd=tmp_path)
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            2, "", missing("typo", tmp_path)), args


@pytest.mark.parametrize("args,uses", [
    (("--help",), SHARED),
    (("faces", "--help"), SHARED),
    (("faces", "list", "--help"), {"--config", "--data-dir", "--model"}),
    (("faces", "export", "--help"), {"--config", "--data-dir", "--model"}),
    (("faces", "enroll-dir", "--help"), SHARED),
    (("reembed", "--help"), SHARED),
    (("evaluate", "--help"), {"--config", "--model", "--workers"}),
    (("gallery", "--help"), {"--config", "--data-dir"}),
    (("gallery", "backup", "--help"), {"--config", "--data-dir"}),
    (("users", "--help"), {"--config", "--data-dir"}),
    (("users", "passwd", "--help"), {"--config", "--data-dir"}),
    (("tokens", "create", "--help"), {"--config", "--data-dir"}),
    (("import-pickle", "--help"), {"--config", "--data-dir"}),
    (("weights", "--help"), {"--config", "--model"}),
], ids=lambda v: " ".join(v) if isinstance(v, tuple) else None)
def test_help_lists_the_shared_options_a_command_uses_and_no_other(
        run: Run, args: tuple[str, ...], uses: set[str], tmp_path: Path) -> None:
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", proc.stdout))
    assert options & SHARED == uses


@pytest.mark.parametrize("args,message", [
    (("--model", "SFace", "gallery", "check"), "gallery does not use --model"),
    (("--port", "9000", "faces", "list"), "faces does not use --port"),
    (("--source", "0", "users", "list"), "users does not use --source"),
    (("faces", "--workers", "2", "list"), "list does not use --workers"),
    (("gallery", "check", "--model", "SFace"), "unrecognized arguments: --model SFace"),
    (("evaluate", "people", "--data-dir", "data"), "unrecognized arguments: --data-dir data"),
    (("bogus",), ("unknown command 'bogus' (commands: faces, reembed, evaluate, gallery, "
                  "users, tokens, import-pickle, weights)")),
])
def test_an_option_a_command_does_not_use_is_refused(run: Run, args: tuple[str, ...],
                                                     message: str, tmp_path: Path) -> None:
    proc = run(*args, cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith("usage: ")
    assert proc.stderr.splitlines()[-1].endswith(f": error: {message}")
    assert tree(tmp_path) == []


# -- a missing data dir ---------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ("faces", "list"), ("faces", "delete", "0" * 64), ("faces", "export", "out.json"),
    ("users", "list"), ("users", "passwd", "ada", "--password-stdin"), ("users", "delete", "ada"),
    ("tokens", "list"), ("tokens", "revoke", "0123abcd"),
    ("gallery", "check"), ("gallery", "backup", "backup.sqlite3"),
    ("reembed", "--model", "Dlib"),
], ids=" ".join)
def test_a_missing_data_dir_is_one_error_line_and_nothing_is_created(
        run: Run, command: tuple[str, ...], tmp_path: Path) -> None:
    proc = run(*command, "--data-dir", "typo", cwd=tmp_path, stdin=PASSWORD)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", missing("typo", tmp_path))
    assert tree(tmp_path) == []


def test_a_data_dir_without_a_gallery_and_the_default_one_are_refused_too(
        run: Run, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run("faces", "list", "--data-dir", str(empty), cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", (
        f"error: there is no {DB_FILE} in the data dir {empty}: check --data-dir (or "
        "storage.data_dir in the config file), or create a gallery there: start the server "
        "once, or enroll someone (faces add NAME PHOTO)\n"))
    # No --data-dir, no config.toml here: the default, relative to where the user stands.
    proc = run("faces", "list", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (2, missing("facestream-data", tmp_path))
    assert tree(tmp_path) == ["empty"]


def test_commands_that_make_a_gallery_say_so_in_one_line(run: Run, tmp_path: Path) -> None:
    first = tmp_path / "first"
    proc = run("tokens", "create", "--role", "viewer", "--data-dir", "first", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[1:] == [created(first)]  # after the token's own line
    proc = run("tokens", "create", "--role", "viewer", "--data-dir", "first", cwd=tmp_path)
    assert (proc.returncode, len(proc.stderr.splitlines())) == (0, 1)  # it exists now

    second = tmp_path / "second"
    proc = run("users", "add", "ada", "--password-stdin", "--data-dir", str(second),
               cwd=tmp_path, stdin=PASSWORD)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0, "added viewer ada\n", created(second) + "\n")

    export = tmp_path / "gallery.json"
    assert run("faces", "export", str(export), "--data-dir", "first", cwd=tmp_path
               ).returncode == 0
    third = tmp_path / "third"
    proc = run("faces", "import", str(export), "--data-dir", "third", cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0, "imported 0 people, skipped 0\n", created(third) + "\n")

    # The prototype's pickle: Facenet embeddings with the hashes it gave them.
    rng = np.random.default_rng(3)
    pkl = tmp_path / "faces.pkl"
    pkl.write_bytes(pickle.dumps([(rng.normal(size=128).tolist(), f"{i:064x}")
                                  for i in range(1, 3)]))
    fourth = tmp_path / "fourth"
    proc = run("import-pickle", str(pkl), "--data-dir", "fourth", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[1:] == [created(fourth)]  # after the pickle warning


# -- the server: a new gallery, a camera that cannot be opened, a looping file --------------
# A process: what is tested is its log from start to exit, and stopping it by SIGTERM with
# exit code 0.


def logged_server(cwd: Path, source: str, *extra: str) -> Server:
    """A server of ``source`` with its data in cwd/data, whose camera reconnects fast."""
    config = cwd / "fast-reconnect.toml"
    config.write_text("[camera]\nreconnect_min_s = 0.2\nreconnect_max_s = 0.4\n")
    return Server(source, "data", cwd, workers=1, extra=("--config", str(config), *extra))


def test_the_server_says_it_created_a_gallery_and_only_then(tmp_path: Path) -> None:
    for expected in (1, 0):
        server = logged_server(tmp_path, str(TALKING_HEAD))
        try:
            server.wait_ready_blocking()
        finally:
            assert server.stop() == 0
        assert len(server.lines(created(tmp_path / "data"))) == expected


WEBCAM_HINT = (
    "WARNING facestream.capture: camera 7: cannot open webcam 7: /dev/video7 does not exist "
    "({present}). List cameras with `ls /dev/video*` or `v4l2-ctl --list-devices`, or pass "
    "a video file or a stream instead: --source video.mp4, --source "
    "rtsp://user:pass@host/stream. Retrying every 0.2s at first, then up to every 0.4s; each "
    "attempt is logged at DEBUG")


@pytest.mark.parametrize("kind", ["webcam", "url"])
def test_a_source_that_cannot_be_opened_is_explained_once(kind: str, tmp_path: Path) -> None:
    """Over many attempts (logged at DEBUG) one WARNING says what is wrong and what to try,
    while the stream shows "no signal" and the retries go on."""
    if kind == "webcam":
        if Path("/dev/video7").exists():
            pytest.skip("this machine has a /dev/video7")
        source, shown = "7", "7"
    else:
        port = free_port()  # nothing listens there
        source = f"rtsp://admin:hunter2@127.0.0.1:{port}/stream1"
        shown = f"rtsp://***@127.0.0.1:{port}/stream1"
    server = logged_server(tmp_path, source, "--log-level", "DEBUG")
    try:
        server.wait_ready_blocking()
        server.wait_lines(f"facestream.capture: camera {shown}: cannot open", 6)
        camera = server.camera()
        assert (camera["signal"], camera["state"][:18]) == (False, "cannot open source")
        assert camera["source"] == shown
        health = server.get("/healthz").decode()
    finally:
        assert server.stop() == 0
    hints = server.lines("WARNING facestream.capture")
    assert len(hints) == 1, hints
    assert len(server.lines(f"DEBUG facestream.capture: camera {shown}: cannot open; "
                            "retrying in 0.")) >= 5
    if kind == "webcam":
        present = ", ".join(sorted((str(p) for p in Path("/dev").glob("video*")),
                                   key=lambda d: (len(d), d)))
        assert hints[0].endswith(WEBCAM_HINT.format(present=(
            f"video devices here: {present}" if present else
            "no /dev/video* device at all: no webcam attached, or a container started "
            "without --device /dev/video0")))
    else:
        assert f"camera {shown}: cannot open it: nothing answered there in time" in hints[0]
        # Neither the process's whole output (FFmpeg's own lines too) nor /healthz has them.
        for shown_to_a_user in (server.log.read_text(), health):
            assert "hunter2" not in shown_to_a_user and "admin" not in shown_to_a_user


@pytest.fixture
def short_clip(tmp_path: Path) -> Path:
    """0.32 s of a real talking head: many loops in a few seconds."""
    return write_video(tmp_path / "clip.mp4", read_video(TALKING_HEAD, limit=8))


def test_a_looping_file_is_logged_as_opened_once(short_clip: Path, tmp_path: Path) -> None:
    server = logged_server(tmp_path, short_clip.name)
    try:
        server.wait_ready_blocking()
        server.wait_frames(5 * 8)  # five times through the clip
    finally:
        assert server.stop() == 0
    opened = server.lines("facestream.capture: camera clip.mp4: opened")
    assert len(opened) == 1, opened
    assert opened[0].endswith(": opened (512x512, played in a loop)")
    assert server.lines("WARNING facestream.capture") == []


def test_a_file_that_goes_away_is_explained_once_and_reopened(short_clip: Path,
                                                              tmp_path: Path) -> None:
    """Opened once; moved away: one line naming the missing file, then "opened" again when
    it is back (a real reconnection), however many loops and attempts came between."""
    away = tmp_path / "away.mp4"
    server = logged_server(tmp_path, short_clip.name, "--log-level", "DEBUG")
    try:
        server.wait_ready_blocking()
        server.wait_frames(3 * 8)  # three times through the clip
        short_clip.rename(away)
        server.wait_lines("facestream.capture: camera clip.mp4: cannot open", 5)
        away.rename(short_clip)
        server.wait_lines("camera clip.mp4: opened", 2)
        deadline = time.monotonic() + 10
        while not server.camera()["signal"]:  # frames again
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        assert server.stop() == 0
    hints = server.lines("WARNING facestream.capture")
    assert len(hints) == 1, hints
    assert hints[0].endswith(
        f"camera clip.mp4: cannot open it: there is no file clip.mp4 (relative to {tmp_path}). "
        "--source takes a video file, a webcam index (--source 0) or a stream URL (--source "
        "rtsp://user:pass@host/stream). Retrying every 0.2s at first, then up to every 0.4s; "
        "each attempt is logged at DEBUG")
    opened = server.lines("camera clip.mp4: opened")
    assert len(opened) == 2, opened
    assert re.search(r"opened \(512x512, played in a loop\) after \d+ failed attempts$",
                     opened[1]), opened[1]


# -- installing: beside a checkout named facestream ------------------------------------------


def test_python_m_facestream_runs_beside_a_checkout_folder_named_facestream(
        tmp_path: Path) -> None:
    """``git clone ... facestream; pip install -e facestream; python -m facestream`` from the
    folder holding the clone: that folder's facestream/ has no __init__.py, and with
    setuptools' default editable import hook Python took it for a namespace package
    ("cannot import name '__version__' from 'facestream' (unknown location)")."""
    checkout = tmp_path / "work" / "facestream"
    checkout.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, checkout / name)
    shutil.copytree(ROOT / "facestream", checkout / "facestream",
                    ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, script = str(venv / "bin" / "python"), str(venv / "bin" / "facestream")
    # The dependencies are this interpreter's, seen through a path entry (not installed twice).
    purelib = sh(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                 cwd=tmp_path).stdout.strip()
    here = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(purelib) / "facestream-test-deps.pth").write_text("\n".join(sorted(here)) + "\n")
    install = sh(python, "-m", "pip", "install", "-q", "--no-deps", "-e", str(checkout),
                 cwd=tmp_path)
    assert install.returncode == 0, install.stderr

    beside = checkout.parent
    for command in ((python, "-m", "facestream", "--version"), (script, "--version")):
        proc = sh(*command, cwd=beside)
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            0, f"facestream {__version__}\n", ""), command
    proc = sh(python, "-c", "import facestream; print(facestream.__file__)", cwd=beside)
    assert proc.stdout == f"{checkout / 'facestream' / '__init__.py'}\n"
    assert sh(script, "faces", "--help", cwd=beside).stdout.startswith("usage: facestream faces ")


def sh(*command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``command`` as a user's shell runs it: no PYTHONPATH pointing at another checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_weights_checks_the_model_asked_for_wherever_the_option_goes(run: Run,
                                                                      tmp_path: Path) -> None:
    proc = run("weights", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "recognition.model SFace with detector yunet: ready"
    for args in (("weights", "--model", "ArcFace"), ("--model", "ArcFace", "weights")):
        proc = run(*args, cwd=tmp_path)
        assert proc.returncode == 2, args
        assert proc.stderr.startswith("error: model ArcFace needs the weight file "
                                      "arcface_weights.onnx in ")
        assert len(proc.stderr.splitlines()) == 1
