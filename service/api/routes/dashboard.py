"""The dashboard (a static page over the JSON API) and the API's docs, every asset served by the API itself: no
CDN, so an offline cluster sees them too. The dashboard's files are service/static; Swagger UI's and ReDoc's builds
come installed with the fastapi-offline package (a dependency), so no third-party build is kept in this repository.
The pages carry no data; what they show comes from /v1 with the user's token."""
from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
STATIC_URL = "/static"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_ASSETS_URL = "/static-docs"
FAVICON = f"{STATIC_URL}/favicon.svg"
# ReDoc's bundle draws its "API docs by Redocly" badge with an image from its vendor's CDN, whatever the options; the
# docs pages only allow images from the API itself, so the browser never asks for it (the badge's image then hides
# itself, the link stays). Only images are restricted: the pages' inline scripts and styles are the libraries' own.
DOCS_HEADERS = {"Content-Security-Policy": "img-src 'self' data: blob:"}

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def _docs_page(page: HTMLResponse) -> HTMLResponse:
    page.headers.update(DOCS_HEADERS)
    return page


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return _docs_page(get_swagger_ui_html(
        openapi_url=request.app.openapi_url, title="deltamu API",
        swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=FAVICON, swagger_ui_parameters={"validatorUrl": None}))   # the validator badge calls out


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return _docs_page(get_redoc_html(openapi_url=request.app.openapi_url, title="deltamu API",
                                     redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js", redoc_favicon_url=FAVICON,
                                     with_google_fonts=False))
