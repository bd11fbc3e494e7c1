"""Page routes and static files. The HTML carries no data (the scripts fetch it with the
person's token), so the pages themselves are public, like the OpenAPI docs pages; they are
added as plain Starlette routes, outside the API's access table."""
from __future__ import annotations

import logging
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request

log = logging.getLogger("vigil.dashboard")

HERE = Path(__file__).parent
STATIC = HERE / "static"
# Browser libraries installed from the npm registry (package.json, package-lock.json; `npm ci`
# in scripts/setup.sh) and served from here: the control-room machines have no internet.
# name -> the package's dist folder, served at /static/vendor/<name>/
VENDOR: dict[str, Path] = {
    "leaflet": HERE / "node_modules" / "leaflet" / "dist",   # the supervisor's map
    "uplot": HERE / "node_modules" / "uplot" / "dist",       # heart-rate plots
}
VENDOR_ADVICE = "run scripts/setup.sh (it runs `npm ci --omit=dev` in backend/dashboard)"

# path -> (page name: pages/<name>.html and static/<name>.js, title)
PAGES: dict[str, tuple[str, str]] = {
    "/login": ("login", "Sign in"),
    "/supervisor": ("supervisor", "Supervisor"),
    "/fleet": ("fleet", "Fleet"),
    "/audit": ("audit", "Audit"),
    "/me": ("me", "My data"),
}

# The pages change only with a deployment; the scripts may be cached briefly.
_HTML_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def content_security_policy(tile_url: str | None = None) -> str:
    """Scripts and styles from this origin only; images also from the map's tile server, when one is set."""
    images = "'self' data:"
    if tile_url:
        parts = urlsplit(tile_url.replace("{s}", "*"))  # {s}: the provider's subdomains
        images += f" {parts.scheme}://{parts.netloc}"
    return (f"default-src 'self'; connect-src 'self' ws: wss:; img-src {images}; "
            "style-src 'self'; script-src 'self'; frame-ancestors 'none'")


def missing_vendor() -> list[str]:
    """The libraries whose files are not installed (backend/dashboard/node_modules)."""
    return [name for name, folder in VENDOR.items() if not folder.is_dir()]


def render(page: str, title: str) -> str:
    shell = Template((HERE / "shell.html").read_text())
    return shell.substitute(page=page, title=title, body=(HERE / "pages" / f"{page}.html").read_text())


def install(app: FastAPI, tile_url: str | None = None) -> None:
    """Add the pages (/, /login, /supervisor, /fleet, /audit, /me), /static and /static/vendor to
    ``app``; ``tile_url`` (settings.map_tile_url) is the one other origin the pages load images from."""
    rendered = {path: render(page, title) for path, (page, title) in PAGES.items()}
    headers = {**_HTML_HEADERS, "Content-Security-Policy": content_security_policy(tile_url)}

    def page_endpoint(path: str):
        async def endpoint(request: Request) -> HTMLResponse:
            return HTMLResponse(rendered[path], headers=headers)
        return endpoint

    async def root(request: Request) -> RedirectResponse:
        return RedirectResponse("/login", status_code=307)

    app.add_route("/", root, methods=["GET"], include_in_schema=False)
    for path in PAGES:
        app.add_route(path, page_endpoint(path), methods=["GET"], include_in_schema=False)
    _install_vendor(app)  # before /static, which would otherwise answer for /static/vendor/...
    app.mount("/static", StaticFiles(directory=STATIC), name="dashboard-static")
    _install_docs(app)


def _install_vendor(app: FastAPI) -> None:
    """/static/vendor/<name>/...: each library's dist files. A library not installed answers 503
    with what to do (the page says it too, and the alert feed works without it), and start-up logs it."""
    missing = missing_vendor()
    if missing:
        log.error("dashboard: %s not installed in %s: the supervisor's map and the heart-rate plots will not draw; %s",
                  ", ".join(missing), HERE / "node_modules", VENDOR_ADVICE)
    for name, folder in VENDOR.items():
        if name in missing:
            async def absent(request: Request, name: str = name) -> PlainTextResponse:
                return PlainTextResponse(f"{name} is not installed on this server: {VENDOR_ADVICE}", status_code=503)
            app.add_route(f"/static/vendor/{name}/{{path:path}}", absent, methods=["GET"], include_in_schema=False)
        else:
            app.mount(f"/static/vendor/{name}", StaticFiles(directory=folder), name=f"dashboard-vendor-{name}")


def _install_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the swagger-ui-bundle package, served here (the control-room
    machines have no internet; FastAPI's default page loads it from a CDN and stays blank)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    async def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")

    app.add_route("/docs", docs, methods=["GET"], include_in_schema=False)
    app.mount("/docs/static", StaticFiles(directory=swagger_ui_path), name="docs-static")
