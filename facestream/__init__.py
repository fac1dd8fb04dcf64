"""facestream: a live face-recognition streaming server."""

__version__ = "0.1.0"
