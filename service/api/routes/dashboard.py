"""The dashboard (a static page over the JSON API) and the API's docs, every asset served from service/static: no
CDN, so an offline cluster sees them too. The pages carry no data; what they show comes from /v1 with the user's
token."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
STATIC_URL = "/static"
FAVICON = f"{STATIC_URL}/favicon.svg"

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=request.app.openapi_url, title="deltamu API",
                               swagger_js_url=f"{STATIC_URL}/vendor/swagger-ui-bundle.js",
                               swagger_css_url=f"{STATIC_URL}/vendor/swagger-ui.css", swagger_favicon_url=FAVICON,
                               swagger_ui_parameters={"validatorUrl": None})   # the validator badge calls out


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=request.app.openapi_url, title="deltamu API",
                          redoc_js_url=f"{STATIC_URL}/vendor/redoc.standalone.js", redoc_favicon_url=FAVICON,
                          with_google_fonts=False)
