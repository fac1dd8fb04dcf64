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
    return _page(request, "index.html", ("style.css", "js/main.js"))


@routes.get("/login", role=Role.OPEN)
async def login_page(request: web.Request) -> web.Response:
    return _page(request, "login.html", ("style.css", "login.js"))


async def revalidate_static(request: web.Request, response: web.StreamResponse) -> None:
    """Files under /static/ may be kept but are checked before each use (``no-cache``; the
    static route answers a 304 to a matching ETag or Last-Modified). The pages link their
    entry script with a content hash (see `_page`), but the dashboard's ES modules import one
    another by plain URL, which no hash can reach without a build step or an import map (the
    CSP forbids inline ones): without this a browser could run a fresh main.js with modules
    cached from an older server (``on_response_prepare``)."""
    if request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-cache")


# The pages' stylesheets and scripts (index.html and login.html link them; js/ holds the
# dashboard's modules, which `revalidate_static` has browsers check before each use).
routes.static("/static/", str(resources.files("facestream").joinpath("static")),
              role=Role.OPEN, name="static")
