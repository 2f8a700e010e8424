"""The ops dashboard at `/dashboard`: one HTML page and its script and style, served by the API.

Every number on the page comes from the `/v1/ops/…` JSON (and `/v1/events` is there for a live
feed); the page holds no data of its own. The ops token is asked once and kept for the tab
(sessionStorage), or given as `/dashboard#token=…`: a fragment never reaches a server, so the token
is in no access log. No build step and no CDN: the files are in the package.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from producers.http.problems import Problem

HERE = Path(__file__).parent
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css", "favicon.svg": "image/svg+xml"}

# The page keeps an ops token: nothing from another origin may run in it or frame it, and no link
# followed from it tells where it was.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)


@router.get("/dashboard", response_class=HTMLResponse)
async def page() -> HTMLResponse:
    return HTMLResponse((HERE / "templates" / "dashboard.html").read_text(), headers=PAGE_HEADERS)


@router.get("/dashboard/static/{name}")
async def static(name: str) -> FileResponse:
    if name not in STATIC:
        raise Problem(404, "not_found", f"no file {name!r}")
    return FileResponse(HERE / "static" / name, media_type=STATIC[name])
