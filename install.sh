#!/bin/sh
# Install facestream and what its tests need, on Debian (or Ubuntu), as root or as a user:
#
#   1. the Debian packages the tests use, if missing: chromium (the browser tests drive it;
#      Playwright's own browser download is never used), mosquitto (a real MQTT broker for
#      the MQTT tests), openssl (test certificates), postgresql (the PostgreSQL gallery's
#      tests start a throwaway cluster of their own; the Debian service is not used);
#      GStreamer's RTSP server for the RTSP camera tests (tests/rtsp_server.py runs under
#      Debian's /usr/bin/python3: python3-gi, gir1.2-gst-rtsp-server-1.0, and the elements
#      it serves with: qtdemux and rtph264pay from gstreamer1.0-plugins-good, h264parse from
#      gstreamer1.0-plugins-bad); and python3-venv where Python lacks venv.
#      As a user this asks sudo for them.
#   2. a virtual environment in .venv (Debian's Python refuses `pip install` outside one),
#      with facestream installed into it in editable mode, with its test dependencies.
#
# Then: .venv/bin/facestream --source 0   and   .venv/bin/python -m pytest
# PYTHON=/path/to/python3.11 ./install.sh picks the interpreter (default: python3).
set -eu
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"

say() { printf 'install: %s\n' "$*"; }

missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
# The RTSP server of the RTSP camera tests: Debian's Python with GObject introspection, the
# RTSP server library's typelib, and the plugins holding qtdemux/rtph264pay and h264parse.
/usr/bin/python3 -c 'import gi' >/dev/null 2>&1 || missing="$missing python3-gi"
ls /usr/lib/*/girepository-1.0/GstRtspServer-1.0.typelib >/dev/null 2>&1 \
    || missing="$missing gir1.2-gst-rtsp-server-1.0"
ls /usr/lib/*/gstreamer-1.0/libgstrtp.so >/dev/null 2>&1 \
    || missing="$missing gstreamer1.0-plugins-good"
ls /usr/lib/*/gstreamer-1.0/libgstvideoparsersbad.so >/dev/null 2>&1 \
    || missing="$missing gstreamer1.0-plugins-bad"
if [ ! -d .venv ] && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing="$missing python3-venv"
fi

if [ -n "$missing" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "please install these with your package manager, then run me again:$missing"
        exit 1
    fi
    if [ "$(id -u)" = 0 ]; then
        as_root=""
    elif command -v sudo >/dev/null 2>&1; then
        as_root="sudo"
        say "installing Debian packages with sudo:$missing"
    else
        say "these Debian packages are missing and there is no sudo; as root run:"
        say "  apt-get install -y$missing"
        exit 1
    fi
    $as_root apt-get update
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y $missing
fi

if [ ! -x .venv/bin/python ]; then
    say "creating the virtual environment .venv ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -e ".[test]"

say "done. Serve webcam 0:  .venv/bin/facestream --source 0"
say "      run the tests:    .venv/bin/python -m pytest"
