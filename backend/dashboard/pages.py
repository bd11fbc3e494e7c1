"""Page routes and static files. The HTML carries no data (the scripts fetch it with the
person's token), so the pages themselves are public, like the OpenAPI docs pages; they are
added as plain Starlette routes, outside the API's access table."""
from __future__ import annotations

from pathlib import Path
from string import Template

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request

HERE = Path(__file__).parent
STATIC = HERE / "static"

# path -> (page name: pages/<name>.html and static/<name>.js, title)
PAGES: dict[str, tuple[str, str]] = {
    "/login": ("login", "Sign in"),
    "/supervisor": ("supervisor", "Supervisor"),
    "/fleet": ("fleet", "Fleet"),
    "/audit": ("audit", "Audit"),
    "/me": ("me", "My data"),
}

# The pages change only with a deployment; the scripts may be cached briefly.
_HTML_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                 "Content-Security-Policy": ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                                             "style-src 'self'; script-src 'self'; frame-ancestors 'none'")}


def render(page: str, title: str) -> str:
    shell = Template((HERE / "shell.html").read_text())
    return shell.substitute(page=page, title=title, body=(HERE / "pages" / f"{page}.html").read_text())


def install(app: FastAPI) -> None:
    """Add the pages (/, /login, /supervisor, /fleet, /audit, /me) and /static to ``app``."""
    rendered = {path: render(page, title) for path, (page, title) in PAGES.items()}

    def page_endpoint(path: str):
        async def endpoint(request: Request) -> HTMLResponse:
            return HTMLResponse(rendered[path], headers=_HTML_HEADERS)
        return endpoint

    async def root(request: Request) -> RedirectResponse:
        return RedirectResponse("/login", status_code=307)

    app.add_route("/", root, methods=["GET"], include_in_schema=False)
    for path in PAGES:
        app.add_route(path, page_endpoint(path), methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="dashboard-static")
    _install_docs(app)


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
