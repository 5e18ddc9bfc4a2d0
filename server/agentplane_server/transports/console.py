"""The web console's static files on the HTTP listener, at `/`, with deep links.

Starlette's StaticFiles serves the built files (content types, ETag, conditional and HEAD
requests, path containment). Around it, this module adds only what a single-page app needs: a
GET for a page path that is no file (`/sessions/support-42`) gets index.html, so links can be
shared; paths shaped like an RPC (`/package.Service/Method`), other methods and missing assets
stay 404, so a mistyped call never receives a web page. Every response carries headers that
keep credentials on this origin: the page may only connect to itself and sends no referrer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles

from agentplane_server.config import Settings

log = logging.getLogger(__name__)

# The console of a source checkout, as `make setup` builds it.
CHECKOUT_CONSOLE = Path(__file__).resolve().parents[3] / "console" / "dist"
# /agentplane.session.v1.SessionService/GetSession, /grpc.health.v1.Health/Check, ...
_RPC_PATH = re.compile(r"^/[A-Za-z_][\w]*(\.[\w]+)+/[\w]+$")
_SECURITY_HEADERS = {
    # Scripts, styles and calls only from this origin, so a credential is sent nowhere else.
    # Inline styles: the chart library positions its elements with style attributes.
    "content-security-policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


def console_directory(settings: Settings) -> Path | None:
    """The built console to serve, or None (off, or not built)."""
    if settings.console_dir == "off":
        return None
    directory = Path(settings.console_dir) if settings.console_dir else CHECKOUT_CONSOLE
    if (directory / "index.html").is_file():
        return directory
    if settings.console_dir:
        raise ValueError(f"--console-dir {directory} holds no index.html (build it: make console)")
    return None


class ConsoleFiles:
    """ASGI app: the console's files, index.html for page paths, 404 for the rest."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files = StaticFiles(directory=directory)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        response = await self._response(scope)
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        await response(scope, receive, send)

    async def _response(self, scope: dict) -> Response:
        path: str = scope["path"]
        if scope["method"] not in ("GET", "HEAD") or _RPC_PATH.match(path):
            return PlainTextResponse("not found", status_code=404)
        try:
            response: Any = await self.files.get_response(self.files.get_path(scope), scope)
        except HTTPException as error:
            if error.status_code != 404:
                raise
            response = None
        if response is not None and response.status_code != 404:
            if path.startswith("/assets/"):  # content-hashed names: cache for good
                response.headers["cache-control"] = "public, max-age=31536000, immutable"
            else:
                response.headers["cache-control"] = "no-cache"
            return response
        last = path.rsplit("/", 1)[-1]
        if path.startswith("/assets/") or "." in last:
            return PlainTextResponse("not found", status_code=404)
        # A page of the console (a deep link): the app routes it in the browser.
        return FileResponse(
            self.directory / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"cache-control": "no-cache"},
        )


def console_app(settings: Settings) -> Callable | None:
    directory = console_directory(settings)
    if directory is None:
        log.info("web console not served", extra={"console_dir": settings.console_dir or None})
        return None
    return ConsoleFiles(directory)
