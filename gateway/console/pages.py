"""The console: server-rendered pages (Jinja2, autoescaped) with small HTML partials that
one script of our own (static/console.js) refreshes in place, htmx-style, so counters and
breaker states move without a reload. No Node build, no CDN, no inline script or style
(the CSP forbids both). Actions are plain HTML forms posting to /console/...: they work
with the keyboard and without the script; the script only adds confirmation dialogs.

Each area has a module of its own with a `router`, included here:
- pages_overview: log in/out, overview, a pipeline's page with its kill switch.
- pages_runs: runs, a run's page with its report, rejects browser, drift and quality.
- pages_review: review queue and decisions, audit history, tokens (admin).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from gateway.console.app import NotLoggedIn
from gateway.console.auth import Principal

HERE = Path(__file__).parent
PREFIX = "/console"

templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                        trim_blocks=True, lstrip_blocks=True)


def render(request: Request, template: str, principal: Principal | None, status_code: int = 200,
           headers: dict[str, str] | None = None, **values: Any) -> HTMLResponse:
    """A page (or a partial: a template whose name starts with `_`) for this caller."""
    body = templates.get_template(template).render(
        request=request, user=principal, csrf=getattr(request.state, "csrf", ""), prefix=PREFIX, **values)
    # Referrer-Policy same-origin (not the API's no-referrer): with no-referrer a browser
    # sends `Origin: null` on the page's own form posts, which the CSRF origin check refuses
    return HTMLResponse(body, status_code=status_code, headers={"Referrer-Policy": "same-origin", **(headers or {})})


def back_to(request: Request, path: str, message: str = "") -> RedirectResponse:
    """After a form's POST: 303 to a console page, with a one-line message to show."""
    target = f"{PREFIX}{path}"
    if message:
        target += ("&" if "?" in target else "?") + "msg=" + quote(message[:300])
    return RedirectResponse(target, status_code=303)


def mount(app: FastAPI) -> None:
    from gateway.console import pages_overview, pages_review, pages_runs

    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    for area in (pages_overview, pages_runs, pages_review):
        router.include_router(area.router)
    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(NotLoggedIn)
    async def to_login(request: Request, exc: NotLoggedIn) -> Response:
        # a page sends the browser to log in; the API (and a partial's fetch) gets the 401
        if request.url.path.startswith(PREFIX) and "x-console-partial" not in request.headers:
            return RedirectResponse(f"{PREFIX}/login?next={quote(request.url.path)}", status_code=303)
        from fastapi.exception_handlers import http_exception_handler

        return await http_exception_handler(request, exc)

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def error_page(request: Request, exc: StarletteHTTPException) -> Response:
        # a console page the caller may not see (403) or that does not exist (404): a page
        # saying so; the API and the partials keep their JSON
        if (exc.status_code in (403, 404) and request.url.path.startswith(PREFIX + "/")
                and "x-console-partial" not in request.headers
                and not request.url.path.startswith(PREFIX + "/static/")):
            return render(request, "error.html", None, status_code=exc.status_code,
                          code=exc.status_code, detail=str(exc.detail),
                          headers=dict(exc.headers or {}))
        from fastapi.exception_handlers import http_exception_handler

        return await http_exception_handler(request, exc)


__all__ = ["PREFIX", "back_to", "mount", "render", "templates"]
