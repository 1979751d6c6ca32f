"""The OpenAPI document describes every endpoint; /docs shows it in Swagger UI."""
import re

from swagger_ui_bundle import swagger_ui_path

from saathii import schemas
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


def test_openapi_schemas_come_from_marshmallow():
    spec = build_spec()
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


def test_openapi_describes_what_the_server_enforces():
    spec = build_spec()
    schemas = spec["components"]["schemas"]
    assert schemas["StatusUpdate"]["minProperties"] == 1
    item = schemas["FavoriteItem"]
    assert set(item["required"]) == set(item["properties"])  # nullable, but always present
    assert item["properties"]["sex"]["enum"][:2] == ["male", "female"]
    batch = {p["name"]: p for p in spec["paths"]["/users/presence"]["get"]["parameters"]}
    assert batch["user_ids"]["schema"]["pattern"].startswith("^[1-9]")


def test_responses_match_their_documented_schemas(client, customer, listener):
    """Views build hot-path responses by hand; the schemas that document them must fit."""
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
