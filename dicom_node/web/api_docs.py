"""The API's Swagger UI at ``/docs``, served from this node: hospital networks often have
no route to a CDN, where FastAPI's default page loads Swagger UI from. The files come
from the ``swagger-ui-bundle-v2`` package (Swagger UI 5, which reads OpenAPI 3.1)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def mount_api_docs(app: FastAPI) -> None:
    """``GET /docs`` (Swagger UI on ``/openapi.json``) and its scripts under ``/docs/assets``;
    create ``app`` with ``docs_url=None``."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="api-docs")

    @app.get("/docs", include_in_schema=False)
    def api_docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
        )
