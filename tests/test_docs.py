"""The OpenAPI document describes every endpoint; /docs shows it in Swagger UI."""
import re
from datetime import datetime, timezone

import pytest
from marshmallow import Schema
from marshmallow import fields as mm_fields
from swagger_ui_bundle import swagger_ui_path

from saathii import openapi, schemas
from saathii.api.contract import contract_of
from saathii.api.dumpers import dumper
from saathii.openapi import build_spec


def test_openapi_lists_every_route(app, client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json
    assert spec["openapi"] == "3.0.3"
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("favorites.", "presence.")):
            path = rule.rule.replace("<", "{").replace(">", "}")
            served |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == served


def test_openapi_schemas_come_from_marshmallow(app):
    spec = build_spec(app)
    schemas = spec["components"]["schemas"]
    assert schemas["FavoriteRequest"]["properties"]["listener_id"] == {
        "type": "integer", "minimum": 1, "maximum": 9223372036854775807, "example": 123}
    assert schemas["FavoriteRequest"]["required"] == ["listener_id"]
    assert schemas["StatusUpdate"]["properties"]["wait_time"]["nullable"] is True
    params = {p["name"]: p for p in spec["paths"]["/favorites"]["get"]["parameters"]}
    assert params["per_page"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert spec["security"] == [{"bearerAuth": []}]


def test_docs_page_is_swagger_ui_from_the_package_under_a_strict_policy(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    policy = dict(part.strip().split(" ", 1) for part in
                  response.headers["Content-Security-Policy"].split(";"))
    assert policy == {
        "default-src": "'none'", "script-src": "'self'", "style-src": "'self'",
        "img-src": "'self' data:", "connect-src": "'self'", "base-uri": "'none'",
        "form-action": "'none'", "frame-ancestors": "'none'"}
    assert response.headers["X-Frame-Options"] == "DENY"
    page = response.get_data(as_text=True)
    assert 'data-spec-url="/openapi.json"' in page
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert [(attributes.strip(), body) for attributes, body in scripts] == [
        ('src="/docs/swagger-ui/swagger-ui-bundle.js"', ""), ('src="/docs/static/docs.js"', "")]
    assert "style=" not in page and "<style" not in page
    assets = re.findall(r'(?:href|src)="([^"]+)"', page)
    assert all(asset.startswith("/docs/") for asset in assets), assets  # no CDN
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert served.headers["X-Content-Type-Options"] == "nosniff"
        if asset.startswith("/docs/swagger-ui/"):  # the package's own files, as shipped
            assert served.data == (swagger_ui_path / asset.rsplit("/", 1)[1]).read_bytes()


def test_docs_serve_only_the_swagger_ui_files_the_page_uses(client):
    assert client.get("/docs/swagger-ui/swagger-ui-bundle.js").mimetype == "text/javascript"
    assert client.get("/docs/swagger-ui/swagger-ui.css").mimetype == "text/css"
    for path in ("/docs/swagger-ui/index.html", "/docs/swagger-ui/swagger-initializer.js",
                 "/docs/swagger-ui/../__init__.py", "/docs/swagger-ui/%2e%2e/__init__.py",
                 "/docs/static/../../config.py"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json == {"detail": "Not found"}


def test_openapi_describes_what_the_server_enforces(app):
    spec = build_spec(app)
    schemas = spec["components"]["schemas"]
    assert schemas["StatusUpdate"]["minProperties"] == 1
    item = schemas["FavoriteItem"]
    assert set(item["required"]) == set(item["properties"])  # nullable, but always present
    assert item["properties"]["sex"]["enum"][:2] == ["male", "female"]
    batch = {p["name"]: p for p in spec["paths"]["/users/presence"]["get"]["parameters"]}
    assert batch["user_ids"]["schema"]["pattern"].startswith("^[1-9]")


def test_responses_match_their_documented_schemas(client, customer, listener):
    """Each answer, dumped through its schema by the view's @response, loads back through
    that schema (what the document says is what a client gets)."""
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    client.put("/both/status/me", json={"is_busy": True, "wait_time": 3},
               headers=listener.headers)
    cases = [
        (schemas.FavoritesPageSchema(), client.get("/favorites", headers=customer.headers)),
        (schemas.FavoritesPageSchema(),
         client.get("/favorites?page=1&per_page=5", headers=customer.headers)),
        (schemas.PresenceSchema(), client.get(f"/users/{listener.id}/presence",
                                              headers=customer.headers)),
        (schemas.PresenceSchema(many=True),
         client.get(f"/users/presence?user_ids={listener.id},{customer.id}",
                    headers=customer.headers)),
        (schemas.StatusSchema(), client.get("/both/status/me", headers=listener.headers)),
        (schemas.MessageSchema(),
         client.post("/both/status/heartbeat", headers=listener.headers)),
        (schemas.FavoriteActionSchema(),
         client.get(f"/favorites/check/{listener.id}", headers=customer.headers)),
    ]
    for schema, response in cases:
        assert response.status_code == 200
        schema.load(response.json)  # raises on a missing, unknown or mistyped field
        items = response.json if isinstance(response.json, list) else [response.json]
        for item in items:
            required = {n for n, f in (schema.fields.items()) if f.required}
            assert required <= set(item), (schema, item)


def test_the_document_comes_from_the_views_declarations(app):
    """Each operation's parameters, body, answer and errors are what its view declares:
    a view that declares one more error, or another answer, changes the document."""
    spec = build_spec(app)
    add = spec["paths"]["/favorites/add"]["post"]
    assert add["summary"] == "Add a listener to my favorites"
    assert add["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FavoriteRequest"}
    assert sorted(add["responses"]) == ["200", "400", "401", "404", "413", "415", "429",
                                        "503"]
    check = spec["paths"]["/favorites/check/{listener_id}"]["get"]
    assert check["parameters"] == [{
        "in": "path", "name": "listener_id", "required": True,
        "description": "The listener's user id",
        "schema": {"type": "integer", "minimum": 1, "maximum": 9223372036854775807}}]
    listing = spec["paths"]["/favorites"]["get"]
    assert listing["responses"]["200"]["headers"] == {
        "Link": {"description": "RFC 8288 links: next, prev (and first, last in page mode)",
                 "schema": {"type": "string"}},
        "ETag": {"description": openapi.REVALIDATED, "schema": {"type": "string"}}}
    assert listing["responses"]["304"]["headers"]["ETag"]["description"] == \
        openapi.REVALIDATED
    assert {"in": "header", "name": "If-None-Match", "required": False,
            "description": "The ETag of the answer you hold: 304 if current",
            "schema": {"type": "string"}} in listing["parameters"]
    assert "304" not in add["responses"]  # only the views declared @revalidated
    assert spec["paths"]["/users/me/status"]["get"]["summary"] == "My status (client alias)"
    assert spec["paths"]["/both/status/me"]["get"]["summary"] == "My status"
    update = spec["components"]["schemas"]["StatusUpdate"]
    assert update["not"] == schemas.StatusUpdateSchema.OPENAPI_RULES["not"]


def _sample(field, none=False):
    """A value of a field's type, as the domain hands it to a view."""
    if none and field.allow_none:
        return None
    if isinstance(field, mm_fields.Nested):
        return _sample_of(field.schema, none)
    if isinstance(field, mm_fields.List):
        return [_sample(field.inner, none), _sample(field.inner, none)]
    return {mm_fields.Boolean: True, mm_fields.Integer: 42, mm_fields.Float: 4.5,
            mm_fields.String: "text"}.get(type(field)) \
        or datetime(2026, 12, 6, 1, 2, 3, 456789, tzinfo=timezone.utc)


def _sample_of(schema, none):
    one = {name: _sample(field, none) for name, field in schema.dump_fields.items()}
    return [one, dict(one)] if schema.many else one


def test_every_answers_dumper_dumps_what_its_schema_dumps(app):
    declared = {contract_of(view)["response"][0] for view in app.view_functions.values()
                if contract_of(view)}
    assert {type(schema) for schema in declared} >= {
        schemas.FavoriteActionSchema, schemas.FavoritesPageSchema, schemas.StatusSchema,
        schemas.MessageSchema, schemas.PresenceSchema}
    for schema in declared:
        for none in (False, True):
            value = _sample_of(schema, none)
            assert dumper(schema)(value) == schema.dump(value), (schema, none)


def test_a_field_the_dumper_does_not_know_fails_loudly():
    class Odd(Schema):
        when = mm_fields.Date()

    with pytest.raises(TypeError, match="no dumper for a Date field"):
        dumper(Odd())
