"""The API's own description: /openapi.json for tools and /docs for people."""
from functools import cache

from flask import Blueprint, render_template

from ..openapi import build_spec

bp = Blueprint("docs", __name__)


@cache
def _spec():
    return build_spec()


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3 document."""
    return _spec()


@bp.get("/docs")
def docs():
    """A readable page listing every operation, its parameters and its responses."""
    spec = _spec()

    def resolve(schema):
        """Follow a #/components/schemas/Name reference."""
        while "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    return render_template("docs.html", spec=spec, resolve=resolve)
