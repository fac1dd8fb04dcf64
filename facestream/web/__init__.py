"""The HTTP side: handlers by resource, each route declaring who may use it (``routes``),
the access middleware that enforces those declarations (``access``), and what every handler
shares (``http``). ``facestream.server`` composes them into the application."""
