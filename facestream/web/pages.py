"""The pages: the dashboard, the login page, and the stylesheets and scripts they link."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from .routes import Role, Routes

routes = Routes()


def _page(request: web.Request, page: str, assets: tuple[str, ...]) -> web.Response:
    """A static page whose stylesheet and script are linked with a hash of their content
    (``?v=...``), so a browser never runs a cached script against a newer server."""
    html = resources.files("facestream").joinpath(f"static/{page}").read_text("utf-8")
    static = request.app.router["static"]
    for name in assets:
        versioned = static.url_for(filename=name, append_version=True)
        html = html.replace(f'"/static/{name}"', f'"{versioned}"')
    return web.Response(text=html, content_type="text/html",
                        headers={"Cache-Control": "no-cache"})


@routes.get("/", role=Role.VIEWER, strangers_to="/login")
async def index(request: web.Request) -> web.Response:
    """The dashboard."""
    return _page(request, "index.html", ("style.css", "app.js"))


@routes.get("/login", role=Role.OPEN)
async def login_page(request: web.Request) -> web.Response:
    return _page(request, "login.html", ("style.css", "login.js"))


# The pages' stylesheets and scripts (index.html and login.html link them).
routes.static("/static/", str(resources.files("facestream").joinpath("static")),
              role=Role.OPEN, name="static")
