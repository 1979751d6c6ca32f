"""The API's own description: /openapi.json for tools and /docs (Swagger UI) for people."""
from flask import Blueprint, current_app, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from ..openapi import build_spec
from .pages import page_headers

# Our initializer script lives in static/docs (the page allows no inline script); Swagger
# UI's own files are served from the swagger-ui-bundle package, pinned in requirements.txt.
bp = Blueprint("docs", __name__, static_folder="../static/docs",
               static_url_path="/docs/static")
SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "index.css", "favicon-32x32.png")


def _spec():
    """The app's OpenAPI document, written once."""
    found = current_app.extensions.get("saathii_openapi")
    if found is None:
        found = current_app.extensions["saathii_openapi"] = build_spec(current_app)
    return found


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3 document."""
    return _spec()


@bp.get("/docs")
def docs():
    """Swagger UI on /openapi.json: every operation, and "Try it out" with a pasted token."""
    page = render_template("docs.html", title=_spec()["info"]["title"])
    # Swagger UI's icons are data: URIs in its stylesheet; its calls go to this host only.
    return page, 200, page_headers(img_src="'self' data:")


@bp.get(f"/docs/swagger-ui/<any({', '.join(map(repr, SWAGGER_UI_FILES))}):filename>")
def swagger_ui(filename):
    """One of the Swagger UI files the page uses, from the installed package."""
    return send_from_directory(swagger_ui_path, filename)


@bp.after_request
def cacheable(response):
    """The document and Swagger UI's files are the same for everyone: any cache may keep
    them for a few minutes (the /docs page sets its own no-store)."""
    response.headers.setdefault("Cache-Control", "public, max-age=300")
    return response
